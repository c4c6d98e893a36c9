//! Small captured subtrees: one header element or one `entry` at a time, so
//! the decoder never holds a tree of the whole document.
//!
//! Capture prunes what no record needs and what identifies people: narrative
//! `text`, names, addresses, telecoms and the people around a statement
//! (author, performer, participant, informant) are read past, not kept.
//! Character data is kept only for a `value` of type ST (a short textual
//! result) and for the `originalText` of a PQ value's `translation` (how
//! C-CDA writes a unit outside UCUM, e.g. THOUS/MCL); the decoder takes the
//! latter only when it looks like a unit.

use super::DecodeError;
use super::xml::{Element, Ns, XmlEvent, XmlReader};

#[derive(Debug, Clone)]
pub(crate) struct Node<'a> {
    pub el: Element<'a>,
    pub children: Vec<Node<'a>>,
    pub text: String,
}

/// Elements (in the CDA namespace) whose subtrees are never captured.
const PRUNED: &[&str] = &[
    "text",
    "name",
    "addr",
    "telecom",
    "author",
    "performer",
    "participant",
    "informant",
    "legalAuthenticator",
    "authenticator",
    "originalText",
];

fn pruned(el: &Element) -> bool {
    match el.ns {
        Ns::V3 => PRUNED.contains(&el.local),
        Ns::Fi => el.local == "signatureCollection",
        Ns::Other => true,
        _ => false,
    }
}

fn keeps_text(el: &Element) -> bool {
    // A short ST result, and the local header's sensitiveDocument flag,
    // which producers write as element text as well as an attribute.
    (el.is_v3("value") && el.xsi_type() == Some("ST"))
        || el.is(super::xml::Ns::Fi, "sensitiveDocument")
        || el.is_v3("originalText")
}

/// An `originalText` naming the unit of a PQ value's translation: the only
/// `originalText` captured (see [`keeps_text`]).
fn is_unit_text(stack: &[Node<'_>], child: &Element) -> bool {
    child.is_v3("originalText")
        && matches!(stack, [.., value, translation]
            if translation.el.is_v3("translation")
                && value.el.is_v3("value")
                && value.el.xsi_type() == Some("PQ"))
}

/// Captures the element whose `Start` the reader just returned, up to and
/// including its `End`.
pub(crate) fn capture<'a>(r: &mut XmlReader<'a>, el: Element<'a>) -> Result<Node<'a>, DecodeError> {
    let mut stack: Vec<Node<'a>> = vec![Node {
        el,
        children: Vec::new(),
        text: String::new(),
    }];
    loop {
        match r.next()? {
            XmlEvent::Start(child) => {
                if pruned(&child) && !is_unit_text(&stack, &child) {
                    r.skip()?;
                } else {
                    stack.push(Node {
                        el: child,
                        children: Vec::new(),
                        text: String::new(),
                    });
                }
            }
            XmlEvent::Text(t) => {
                if let Some(top) = stack.last_mut()
                    && keeps_text(&top.el)
                {
                    top.text.push_str(&t);
                }
            }
            XmlEvent::End => {
                let Some(done) = stack.pop() else {
                    return Err(DecodeError::new(
                        super::ErrorClass::NotWellFormed,
                        "unbalanced element",
                    ));
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => return Ok(done),
                }
            }
            XmlEvent::Eof => {
                return Err(DecodeError::new(
                    super::ErrorClass::NotWellFormed,
                    "element not closed at the end of the input",
                ));
            }
        }
    }
}

impl<'a> Node<'a> {
    pub fn attr(&self, local: &str) -> Option<&str> {
        self.el.attr(local).map(str::trim).filter(|v| !v.is_empty())
    }

    pub fn is(&self, local: &str) -> bool {
        self.el.is_v3(local)
    }

    /// Child elements in the CDA namespace named `local`.
    pub fn all<'s>(&'s self, local: &'s str) -> impl Iterator<Item = &'s Node<'a>> + 's {
        self.children.iter().filter(move |c| c.is(local))
    }

    pub fn child(&self, local: &str) -> Option<&Node<'a>> {
        self.children.iter().find(|c| c.is(local))
    }

    /// Follows a path of CDA child names, first match at every step.
    pub fn path(&self, names: &[&str]) -> Option<&Node<'a>> {
        names.iter().try_fold(self, |n, name| n.child(name))
    }

    pub fn has_template(&self, root: &str) -> bool {
        self.all("templateId").any(|t| t.attr("root") == Some(root))
    }

    pub fn null_flavored(&self) -> bool {
        self.attr("nullFlavor").is_some()
    }

    /// Depth-first, in document order, over this node's descendants (not
    /// the node itself). Depth is bounded by the reader's depth limit.
    pub fn for_each_descendant<'s>(&'s self, f: &mut impl FnMut(&'s Node<'a>)) {
        for c in &self.children {
            f(c);
            c.for_each_descendant(f);
        }
    }
}
