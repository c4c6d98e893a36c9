//! The XML scans the decoder is measured against, shared by
//! `benches/decode.rs` and `benches/throughput.rs`.

use quick_xml::Reader;
use quick_xml::events::Event;
use quick_xml::reader::NsReader;

/// Every event of the document, with quick-xml's own checks off: the floor
/// any streaming decoder stands on.
pub fn bare_scan(bytes: &[u8]) -> bool {
    let mut reader = Reader::from_reader(bytes);
    let config = reader.config_mut();
    config.check_end_names = false;
    config.check_comments = false;
    let mut events = 0u64;
    loop {
        match reader.read_event() {
            Ok(Event::Eof) => break,
            Ok(e) => {
                std::hint::black_box(&e);
                events += 1;
            }
            Err(_) => return false,
        }
    }
    std::hint::black_box(events) > 0
}

/// Every event with its namespace resolved (default checks); with
/// `attributes`, every attribute of every element parsed and resolved too.
pub fn ns_scan(bytes: &[u8], attributes: bool) -> bool {
    let mut reader = NsReader::from_reader(bytes);
    let mut events = 0u64;
    loop {
        let event = match reader.read_resolved_event() {
            Ok((ns, event)) => {
                std::hint::black_box(ns);
                event
            }
            Err(_) => return false,
        };
        match event {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) if attributes => {
                for a in e.attributes() {
                    let Ok(a) = a else { return false };
                    std::hint::black_box(reader.resolver().resolve_attribute(a.key));
                }
                std::hint::black_box(&e);
            }
            e => {
                std::hint::black_box(&e);
            }
        }
        events += 1;
    }
    std::hint::black_box(events) > 0
}
