//! The prohibition document (kieltoasiakirja, view 331): its meaning sits
//! in the enclosing section's field code (`1.2.246.537.6.12.2002.331`), the
//! entries carry `code nullFlavor="NA"`. Everything the document says
//! becomes ONE `prohibition` record, placed where its first field entry
//! stands among the document's records.
//!
//! Fields read: 5 (no valid prohibitions, BL); 6 groups a service-event
//! denial from 7 (IVL_TS from/to), 8 (provider, II root) and 9 (service
//! event, II root); 10 groups a provider denial from 11 (provider, II root)
//! and 12 (all registers, BL); 15 (emergency disclosure allowed, BL). The
//! other fields (names, the patient's and a signer's hetu, signatures) are
//! never read.

use super::tree::Node;
use crate::record::{
    Effective, Prohibition, ProviderDenial, Record, RecordBody, ServiceEventDenial, Ts,
};

#[derive(Debug, Default)]
pub(crate) struct ProhibitionAcc {
    result: Prohibition,
    /// Index in the records of the placeholder this record fills.
    slot: Option<usize>,
    effective: Option<Effective>,
    service_event: Option<ServiceEventDenial>,
    provider: Option<(Option<String>, bool)>,
}

fn value_of<'n, 'a>(entry: &'n Node<'a>) -> Option<&'n Node<'a>> {
    entry.child("observation").and_then(|o| o.child("value"))
}

fn bool_of(entry: &Node) -> Option<bool> {
    match value_of(entry)?.attr("value")? {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn root_of(entry: &Node) -> Option<String> {
    value_of(entry)?.attr("root").map(str::to_owned)
}

impl ProhibitionAcc {
    pub fn open_field(&mut self, field: u32) {
        match field {
            6 => {
                self.service_event = Some(ServiceEventDenial {
                    service_event: None,
                    provider: None,
                    from: None,
                    to: None,
                });
            }
            10 => self.provider = Some((None, false)),
            _ => {}
        }
    }

    pub fn close_field(&mut self, field: u32) {
        match field {
            6 => {
                if let Some(d) = self.service_event.take()
                    && (d.service_event.is_some()
                        || d.provider.is_some()
                        || d.from.is_some()
                        || d.to.is_some())
                {
                    self.result.service_events.push(d);
                }
            }
            10 => {
                if let Some((Some(provider), all_registers)) = self.provider.take() {
                    self.result.providers.push(ProviderDenial {
                        provider,
                        all_registers,
                    });
                }
            }
            _ => {}
        }
    }

    /// One entry of field `field`.
    pub fn entry(&mut self, field: u32, entry: &Node, records: &mut Vec<Record>) {
        if self.slot.is_none() {
            self.slot = Some(records.len());
            records.push(Record {
                ordinal: 0,
                effective: None,
                body: RecordBody::Prohibition(Prohibition::default()),
            });
        }
        if self.effective.is_none() {
            self.effective = entry
                .child("observation")
                .and_then(|o| o.child("effectiveTime"))
                .and_then(|t| t.attr("value"))
                .map(|v| Effective::Point(Ts(v.to_owned())));
        }
        match field {
            5 => {
                if let Some(b) = bool_of(entry) {
                    self.result.no_valid_prohibitions = b;
                }
            }
            7 => {
                if let (Some(d), Some(v)) = (self.service_event.as_mut(), value_of(entry)) {
                    d.from = v
                        .child("low")
                        .and_then(|l| l.attr("value"))
                        .map(|s| Ts(s.to_owned()));
                    d.to = v
                        .child("high")
                        .and_then(|l| l.attr("value"))
                        .map(|s| Ts(s.to_owned()));
                }
            }
            8 => {
                if let Some(d) = self.service_event.as_mut() {
                    d.provider = root_of(entry);
                }
            }
            9 => {
                if let Some(d) = self.service_event.as_mut() {
                    d.service_event = root_of(entry);
                }
            }
            11 => {
                if let Some(p) = self.provider.as_mut() {
                    p.0 = root_of(entry);
                }
            }
            12 => {
                if let Some(p) = self.provider.as_mut() {
                    p.1 = bool_of(entry).unwrap_or(false);
                }
            }
            15 => self.result.emergency_disclosure_allowed = bool_of(entry),
            _ => {}
        }
    }

    /// Fills the placeholder and numbers every record.
    pub fn finish_into(self, records: &mut [Record]) {
        if let Some(slot) = self.slot
            && let Some(r) = records.get_mut(slot)
        {
            r.effective = self.effective;
            r.body = RecordBody::Prohibition(self.result);
        }
        for (i, r) in records.iter_mut().enumerate() {
            r.ordinal = u32::try_from(i + 1).unwrap_or(u32::MAX);
        }
    }
}
