//! Frame headers: ordered, repeatable, first occurrence wins; and the
//! per-version escaping of their names and values.

use bytestring::ByteString;

use crate::command::{Command, Version};

/// The headers of a frame, in wire order, repeats kept.
///
/// The specification says that when a header is repeated only the first
/// occurrence counts, so [`Headers::get`] returns the first one; the others
/// stay available through [`Headers::get_all`] and [`Headers::iter`] because
/// a broker must pass a frame's headers on untouched.
///
/// Names and values are [`ByteString`]s: after decoding they are slices of
/// the read buffer, not copies (unless escapes had to be decoded).
///
/// ```
/// use stomp_codec::Headers;
/// let mut h = Headers::new();
/// h.push("destination", "/queue/a");
/// h.push("x-tag", "first");
/// h.push("x-tag", "second");
/// assert_eq!(h.get("x-tag"), Some("first"));
/// assert_eq!(h.get_all("x-tag").collect::<Vec<_>>(), ["first", "second"]);
/// assert_eq!(h.len(), 3);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(ByteString, ByteString)>,
}

impl Headers {
    /// An empty header list.
    ///
    /// ```
    /// assert!(stomp_codec::Headers::new().is_empty());
    /// ```
    pub fn new() -> Headers {
        Headers::default()
    }

    /// An empty header list with room for `n` headers.
    ///
    /// ```
    /// assert!(stomp_codec::Headers::with_capacity(4).is_empty());
    /// ```
    pub fn with_capacity(n: usize) -> Headers {
        Headers {
            entries: Vec::with_capacity(n),
        }
    }

    /// Appends a header, keeping any earlier one of the same name.
    ///
    /// ```
    /// let mut h = stomp_codec::Headers::new();
    /// h.push("id", "0");
    /// assert_eq!(h.get("id"), Some("0"));
    /// ```
    pub fn push(&mut self, name: impl Into<ByteString>, value: impl Into<ByteString>) {
        self.entries.push((name.into(), value.into()));
    }

    /// Sets a header: replaces the first occurrence's value, or appends.
    ///
    /// ```
    /// let mut h = stomp_codec::Headers::new();
    /// h.set("ack", "auto");
    /// h.set("ack", "client");
    /// assert_eq!(h.get("ack"), Some("client"));
    /// assert_eq!(h.len(), 1);
    /// ```
    pub fn set(&mut self, name: impl Into<ByteString>, value: impl Into<ByteString>) {
        let name = name.into();
        match self.entries.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value.into(),
            None => self.entries.push((name, value.into())),
        }
    }

    /// The value of the first header with this name.
    ///
    /// ```
    /// let mut h = stomp_codec::Headers::new();
    /// h.push("receipt", "r1");
    /// assert_eq!(h.get("receipt"), Some("r1"));
    /// assert_eq!(h.get("missing"), None);
    /// ```
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| &**v)
    }

    /// The value of the first header with this name, as a shared [`ByteString`]
    /// (cloning it does not copy the text).
    ///
    /// ```
    /// let mut h = stomp_codec::Headers::new();
    /// h.push("destination", "/topic/x");
    /// assert_eq!(h.get_shared("destination").unwrap(), "/topic/x");
    /// ```
    pub fn get_shared(&self, name: &str) -> Option<&ByteString> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Every value of headers with this name, in order.
    ///
    /// ```
    /// let mut h = stomp_codec::Headers::new();
    /// h.push("a", "1");
    /// h.push("a", "2");
    /// assert_eq!(h.get_all("a").count(), 2);
    /// ```
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| &**v)
    }

    /// Whether a header with this name is present.
    ///
    /// ```
    /// let mut h = stomp_codec::Headers::new();
    /// h.push("a", "1");
    /// assert!(h.contains("a") && !h.contains("b"));
    /// ```
    pub fn contains(&self, name: &str) -> bool {
        self.entries.iter().any(|(n, _)| n == name)
    }

    /// Removes every header with this name; returns how many were removed.
    ///
    /// ```
    /// let mut h = stomp_codec::Headers::new();
    /// h.push("a", "1");
    /// h.push("b", "2");
    /// h.push("a", "3");
    /// assert_eq!(h.remove("a"), 2);
    /// assert_eq!(h.len(), 1);
    /// ```
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.entries.len();
        self.entries.retain(|(n, _)| n != name);
        before - self.entries.len()
    }

    /// All headers in wire order, as `(name, value)`.
    ///
    /// ```
    /// let mut h = stomp_codec::Headers::new();
    /// h.push("a", "1");
    /// assert_eq!(h.iter().next(), Some(("a", "1")));
    /// ```
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + Clone + '_ {
        self.entries.iter().map(|(n, v)| (&**n, &**v))
    }

    /// All headers in wire order, as shared strings (cloning them is cheap).
    ///
    /// ```
    /// let mut h = stomp_codec::Headers::new();
    /// h.push("a", "1");
    /// let (n, v) = h.iter_shared().next().unwrap();
    /// assert_eq!((&**n, &**v), ("a", "1"));
    /// ```
    pub fn iter_shared(&self) -> impl ExactSizeIterator<Item = (&ByteString, &ByteString)> + '_ {
        self.entries.iter().map(|(n, v)| (n, v))
    }

    /// The number of headers, repeats included.
    ///
    /// ```
    /// assert_eq!(stomp_codec::Headers::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no headers.
    ///
    /// ```
    /// assert!(stomp_codec::Headers::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<N: Into<ByteString>, V: Into<ByteString>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Headers {
        Headers {
            entries: iter
                .into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        }
    }
}

/// How a header's text is written for a given version and command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Escaping {
    /// 1.0, and CONNECT/CONNECTED in every version: bytes are written as they are.
    None,
    /// 1.1: `\n`, `\c`, `\\`.
    V1_1,
    /// 1.2: `\r`, `\n`, `\c`, `\\`.
    V1_2,
}

impl Escaping {
    pub(crate) fn for_frame(version: Version, command: Command) -> Escaping {
        if command.is_unescaped() {
            return Escaping::None;
        }
        match version {
            Version::V1_0 => Escaping::None,
            Version::V1_1 => Escaping::V1_1,
            Version::V1_2 => Escaping::V1_2,
        }
    }

    /// Decodes one escape letter (the byte after a backslash).
    pub(crate) fn unescape_byte(self, letter: u8) -> Option<u8> {
        match (self, letter) {
            (Escaping::None, _) => None,
            (_, b'n') => Some(b'\n'),
            (_, b'c') => Some(b':'),
            (_, b'\\') => Some(b'\\'),
            (Escaping::V1_2, b'r') => Some(b'\r'),
            _ => None,
        }
    }

    /// The escape letter for a byte that cannot appear raw, if this scheme has one.
    pub(crate) fn escape_letter(self, byte: u8) -> Option<u8> {
        match (self, byte) {
            (Escaping::None, _) => None,
            (_, b'\n') => Some(b'n'),
            (_, b':') => Some(b'c'),
            (_, b'\\') => Some(b'\\'),
            (Escaping::V1_2, b'\r') => Some(b'r'),
            _ => None,
        }
    }
}
