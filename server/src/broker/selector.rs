//! Message selectors: SUBSCRIBE `selector` (ActiveMQ, Artemis), a SQL-92
//! subset over the message's headers: `=`, `<>`, `<`, `>`, `<=`, `>=`,
//! `AND`, `OR`, `NOT`, `IN`, `LIKE` (`%`, `_`, `ESCAPE`), `IS [NOT] NULL`,
//! `BETWEEN`, string (`'it''s'`), number and boolean literals, parentheses.
//! Parsed once (a nom tokenizer, then recursive descent), bounded in size
//! and depth; a selector that does not parse is refused with the position
//! of the problem. Evaluated with SQL's three values: a missing header is
//! NULL, a comparison with NULL is unknown, and only true selects.

use nom::Parser as _;
use nom::branch::alt;
use nom::bytes::complete::{tag, take_while};
use nom::character::complete::{char, satisfy};
use nom::combinator::{map, recognize};
use nom::number::complete::recognize_float;
use nom::sequence::pair;
use stomp_codec::Headers;

/// Longest selector accepted, bytes.
pub const MAX_SELECTOR: usize = 4096;
/// Deepest nesting of parentheses and NOTs accepted.
const MAX_DEPTH: usize = 32;
/// Most values in one `IN (...)` list.
const MAX_IN: usize = 256;

/// A selector that cannot be used: what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector {problem} at position {position}{near}")]
pub struct SelectorError {
    /// Bytes from the selector's start.
    pub position: usize,
    /// What is wrong.
    pub problem: String,
    /// The text there, quoted (empty at the end).
    near: String,
}

impl SelectorError {
    fn at(text: &str, position: usize, problem: impl Into<String>) -> SelectorError {
        let rest: String = text[position.min(text.len())..].chars().take(20).collect();
        SelectorError {
            position,
            problem: problem.into(),
            near: if rest.is_empty() {
                " (the end)".into()
            } else {
                format!(" (near {rest:?})")
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Op(&'static str),
    Open,
    Close,
    Comma,
    Word(Word),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word {
    And,
    Or,
    Not,
    In,
    Like,
    Escape,
    Is,
    Null,
    Between,
    True,
    False,
}

fn word(ident: &str) -> Tok {
    let w = match ident.to_ascii_uppercase().as_str() {
        "AND" => Word::And,
        "OR" => Word::Or,
        "NOT" => Word::Not,
        "IN" => Word::In,
        "LIKE" => Word::Like,
        "ESCAPE" => Word::Escape,
        "IS" => Word::Is,
        "NULL" => Word::Null,
        "BETWEEN" => Word::Between,
        "TRUE" => Word::True,
        "FALSE" => Word::False,
        _ => return Tok::Ident(ident.to_string()),
    };
    Tok::Word(w)
}

/// `'...'`, a doubled quote standing for one.
fn string_literal(input: &str) -> nom::IResult<&str, String> {
    let (mut rest, _) = char('\'').parse(input)?;
    let mut out = String::new();
    loop {
        let Some(i) = rest.find('\'') else {
            return Err(nom::Err::Error(nom::error::Error::new(
                rest,
                nom::error::ErrorKind::Char,
            )));
        };
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(after) = rest.strip_prefix('\'') {
            out.push('\'');
            rest = after;
        } else {
            return Ok((rest, out));
        }
    }
}

fn identifier(input: &str) -> nom::IResult<&str, &str> {
    recognize(pair(
        satisfy(|c| c.is_alphabetic() || c == '_' || c == '$'),
        take_while(|c: char| c.is_alphanumeric() || matches!(c, '_' | '$' | '.' | '-')),
    ))
    .parse(input)
}

fn token(input: &str) -> nom::IResult<&str, Tok> {
    alt((
        map(string_literal, Tok::Str),
        map(recognize_float, |s: &str| {
            Tok::Num(s.parse::<f64>().unwrap_or(f64::NAN))
        }),
        map(
            alt((
                tag("<>"),
                tag("<="),
                tag(">="),
                tag("="),
                tag("<"),
                tag(">"),
            )),
            |op: &str| {
                Tok::Op(match op {
                    "<>" => "<>",
                    "<=" => "<=",
                    ">=" => ">=",
                    "=" => "=",
                    "<" => "<",
                    _ => ">",
                })
            },
        ),
        map(char('('), |_| Tok::Open),
        map(char(')'), |_| Tok::Close),
        map(char(','), |_| Tok::Comma),
        map(identifier, word),
    ))
    .parse(input)
}

fn tokenize(text: &str) -> Result<Vec<(usize, Tok)>, SelectorError> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(out);
        }
        let at = text.len() - rest.len();
        match token(rest) {
            Ok((after, tok)) => {
                out.push((at, tok));
                rest = after;
            }
            Err(_) if rest.starts_with('\'') => {
                return Err(SelectorError::at(
                    text,
                    at,
                    "has a string that is not closed",
                ));
            }
            Err(_) => {
                return Err(SelectorError::at(
                    text,
                    at,
                    "has a character it cannot read",
                ));
            }
        }
    }
}

/// A value in an expression.
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Header(String),
    Str(String),
    Num(f64),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare(Operand, &'static str, Operand),
    In(Operand, Vec<Operand>, bool),
    Like(Operand, Vec<LikePart>, bool),
    IsNull(Operand, bool),
    Between(Operand, Operand, Operand, bool),
    Truth(Operand),
}

#[derive(Debug, Clone, PartialEq)]
enum LikePart {
    Char(char),
    One,
    Any,
}

/// A parsed selector.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    expr: Expr,
}

struct Descent<'a> {
    text: &'a str,
    toks: Vec<(usize, Tok)>,
    at: usize,
    depth: usize,
}

impl Descent<'_> {
    fn position(&self) -> usize {
        self.toks.get(self.at).map_or(self.text.len(), |(p, _)| *p)
    }

    fn error(&self, problem: &str) -> SelectorError {
        SelectorError::at(self.text, self.position(), problem)
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|(_, t)| t)
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == Some(tok) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn eat_word(&mut self, w: Word) -> bool {
        self.eat(&Tok::Word(w))
    }

    fn deeper(&mut self) -> Result<(), SelectorError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("nests deeper than 32 levels"));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, SelectorError> {
        let mut left = self.and()?;
        while self.eat_word(Word::Or) {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, SelectorError> {
        let mut left = self.not()?;
        while self.eat_word(Word::And) {
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, SelectorError> {
        if self.eat_word(Word::Not) {
            self.deeper()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.predicate()
    }

    fn operand(&mut self) -> Result<Operand, SelectorError> {
        let tok = self.peek().cloned();
        let operand = match tok {
            Some(Tok::Ident(name)) => Operand::Header(name),
            Some(Tok::Str(s)) => Operand::Str(s),
            Some(Tok::Num(n)) => Operand::Num(n),
            Some(Tok::Word(Word::True)) => Operand::Bool(true),
            Some(Tok::Word(Word::False)) => Operand::Bool(false),
            _ => return Err(self.error("expected a header name or a value")),
        };
        self.at += 1;
        Ok(operand)
    }

    fn literal(&mut self) -> Result<Operand, SelectorError> {
        match self.operand()? {
            Operand::Header(_) => {
                self.at -= 1;
                Err(self.error("expected a string or number literal"))
            }
            literal => Ok(literal),
        }
    }

    fn predicate(&mut self) -> Result<Expr, SelectorError> {
        if self.eat(&Tok::Open) {
            self.deeper()?;
            let inner = self.or()?;
            if !self.eat(&Tok::Close) {
                return Err(self.error("expected ')'"));
            }
            self.depth -= 1;
            return Ok(inner);
        }
        let left = self.operand()?;
        if let Some(Tok::Op(op)) = self.peek().cloned() {
            self.at += 1;
            return Ok(Expr::Compare(left, op, self.operand()?));
        }
        if self.eat_word(Word::Is) {
            let negated = self.eat_word(Word::Not);
            if !self.eat_word(Word::Null) {
                return Err(self.error("expected NULL after IS"));
            }
            return Ok(Expr::IsNull(left, negated));
        }
        let negated = self.eat_word(Word::Not);
        if self.eat_word(Word::In) {
            if !self.eat(&Tok::Open) {
                return Err(self.error("expected '(' after IN"));
            }
            let mut list = vec![self.literal()?];
            while self.eat(&Tok::Comma) {
                if list.len() == MAX_IN {
                    return Err(self.error("has more than 256 values in one IN list"));
                }
                list.push(self.literal()?);
            }
            if !self.eat(&Tok::Close) {
                return Err(self.error("expected ',' or ')' in the IN list"));
            }
            return Ok(Expr::In(left, list, negated));
        }
        if self.eat_word(Word::Like) {
            let pattern_at = self.position();
            let Operand::Str(pattern) = self.literal()? else {
                return Err(SelectorError::at(
                    self.text,
                    pattern_at,
                    "expected a string pattern after LIKE",
                ));
            };
            let mut escape = None;
            if self.eat_word(Word::Escape) {
                let escape_at = self.position();
                match self.literal()? {
                    Operand::Str(e) if e.chars().count() == 1 => escape = e.chars().next(),
                    _ => {
                        return Err(SelectorError::at(
                            self.text,
                            escape_at,
                            "expected a one-character string after ESCAPE",
                        ));
                    }
                }
            }
            return Ok(Expr::Like(left, like_parts(&pattern, escape), negated));
        }
        if self.eat_word(Word::Between) {
            let low = self.operand()?;
            if !self.eat_word(Word::And) {
                return Err(self.error("expected AND in BETWEEN ... AND ..."));
            }
            let high = self.operand()?;
            return Ok(Expr::Between(left, low, high, negated));
        }
        if negated {
            return Err(self.error("expected IN, LIKE or BETWEEN after NOT"));
        }
        Ok(Expr::Truth(left))
    }
}

fn like_parts(pattern: &str, escape: Option<char>) -> Vec<LikePart> {
    let mut parts = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        parts.push(match c {
            c if Some(c) == escape => LikePart::Char(chars.next().unwrap_or(c)),
            '%' => LikePart::Any,
            '_' => LikePart::One,
            c => LikePart::Char(c),
        });
    }
    parts
}

fn like(parts: &[LikePart], text: &[char]) -> bool {
    match parts.split_first() {
        None => text.is_empty(),
        Some((LikePart::Any, rest)) => (0..=text.len()).any(|i| like(rest, &text[i..])),
        Some((LikePart::One, rest)) => !text.is_empty() && like(rest, &text[1..]),
        Some((LikePart::Char(c), rest)) => text.first() == Some(c) && like(rest, &text[1..]),
    }
}

/// SQL's three truth values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Truth {
    True,
    False,
    Unknown,
}

impl Truth {
    fn of(b: bool) -> Truth {
        if b { Truth::True } else { Truth::False }
    }

    fn not(self) -> Truth {
        match self {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            Truth::Unknown => Truth::Unknown,
        }
    }
}

/// A value as evaluated against one message.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Null,
    Str(&'a str),
    Num(f64),
    Bool(bool),
}

fn value<'a>(operand: &'a Operand, headers: &'a Headers) -> Value<'a> {
    match operand {
        Operand::Header(name) => headers.get(name).map_or(Value::Null, Value::Str),
        Operand::Str(s) => Value::Str(s),
        Operand::Num(n) => Value::Num(*n),
        Operand::Bool(b) => Value::Bool(*b),
    }
}

fn as_number(v: Value<'_>) -> Option<f64> {
    match v {
        Value::Num(n) => Some(n),
        Value::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn compare(a: Value<'_>, op: &str, b: Value<'_>) -> Truth {
    use std::cmp::Ordering;
    let ordering = match (a, b) {
        (Value::Null, _) | (_, Value::Null) => return Truth::Unknown,
        (Value::Str(x), Value::Str(y)) => {
            // Strings compare for equality only, as in JMS.
            return match op {
                "=" => Truth::of(x == y),
                "<>" => Truth::of(x != y),
                _ => Truth::Unknown,
            };
        }
        (Value::Bool(x), y) | (y, Value::Bool(x)) => {
            let y = match y {
                Value::Bool(y) => y,
                Value::Str(s) if s.eq_ignore_ascii_case("true") => true,
                Value::Str(s) if s.eq_ignore_ascii_case("false") => false,
                _ => return Truth::Unknown,
            };
            return match op {
                "=" => Truth::of(x == y),
                "<>" => Truth::of(x != y),
                _ => Truth::Unknown,
            };
        }
        (x, y) => match (as_number(x), as_number(y)) {
            (Some(x), Some(y)) => match x.partial_cmp(&y) {
                Some(o) => o,
                None => return Truth::Unknown,
            },
            _ => return Truth::Unknown,
        },
    };
    Truth::of(match op {
        "=" => ordering == Ordering::Equal,
        "<>" => ordering != Ordering::Equal,
        "<" => ordering == Ordering::Less,
        ">" => ordering == Ordering::Greater,
        "<=" => ordering != Ordering::Greater,
        _ => ordering != Ordering::Less,
    })
}

fn eval(expr: &Expr, headers: &Headers) -> Truth {
    match expr {
        Expr::Or(a, b) => match (eval(a, headers), eval(b, headers)) {
            (Truth::True, _) | (_, Truth::True) => Truth::True,
            (Truth::False, Truth::False) => Truth::False,
            _ => Truth::Unknown,
        },
        Expr::And(a, b) => match (eval(a, headers), eval(b, headers)) {
            (Truth::False, _) | (_, Truth::False) => Truth::False,
            (Truth::True, Truth::True) => Truth::True,
            _ => Truth::Unknown,
        },
        Expr::Not(a) => eval(a, headers).not(),
        Expr::Compare(a, op, b) => compare(value(a, headers), op, value(b, headers)),
        Expr::In(a, list, negated) => {
            let v = value(a, headers);
            if matches!(v, Value::Null) {
                return Truth::Unknown;
            }
            let found = list
                .iter()
                .any(|l| compare(v, "=", value(l, headers)) == Truth::True);
            Truth::of(found != *negated)
        }
        Expr::Like(a, parts, negated) => match value(a, headers) {
            Value::Str(s) => {
                let chars: Vec<char> = s.chars().collect();
                Truth::of(like(parts, &chars) != *negated)
            }
            _ => Truth::Unknown,
        },
        Expr::IsNull(a, negated) => Truth::of(matches!(value(a, headers), Value::Null) != *negated),
        Expr::Between(a, low, high, negated) => {
            let v = value(a, headers);
            let inside = match (
                compare(v, ">=", value(low, headers)),
                compare(v, "<=", value(high, headers)),
            ) {
                (Truth::True, Truth::True) => Truth::True,
                (Truth::False, _) | (_, Truth::False) => Truth::False,
                _ => Truth::Unknown,
            };
            if *negated { inside.not() } else { inside }
        }
        Expr::Truth(a) => match value(a, headers) {
            Value::Bool(b) => Truth::of(b),
            Value::Str(s) if s.eq_ignore_ascii_case("true") => Truth::True,
            Value::Str(s) if s.eq_ignore_ascii_case("false") => Truth::False,
            _ => Truth::Unknown,
        },
    }
}

impl Selector {
    /// Parses a selector.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        if text.len() > MAX_SELECTOR {
            return Err(SelectorError::at(
                text,
                MAX_SELECTOR,
                "is longer than 4096 bytes",
            ));
        }
        let toks = tokenize(text)?;
        if toks.is_empty() {
            return Err(SelectorError::at(text, 0, "is empty"));
        }
        let mut p = Descent {
            text,
            toks,
            at: 0,
            depth: 0,
        };
        let expr = p.or()?;
        if p.at < p.toks.len() {
            return Err(p.error("has more after a complete expression"));
        }
        Ok(Selector { expr })
    }

    /// Whether a message with these headers is selected.
    pub fn matches(&self, headers: &Headers) -> bool {
        eval(&self.expr, headers) == Truth::True
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    fn selects(selector: &str, pairs: &[(&str, &str)]) -> bool {
        Selector::parse(selector)
            .unwrap_or_else(|e| panic!("{selector}: {e}"))
            .matches(&headers(pairs))
    }

    #[test]
    fn comparisons_and_logic() {
        let h = [("region", "eu"), ("amount", "250"), ("vip", "true")];
        assert!(selects("region = 'eu'", &h));
        assert!(selects("region <> 'us' AND amount > 100", &h));
        assert!(selects("amount >= 250 AND amount <= 250.0", &h));
        assert!(!selects("amount < 100 OR region = 'us'", &h));
        assert!(selects("NOT (region = 'us')", &h));
        assert!(selects("vip", &h));
        assert!(selects("vip = TRUE", &h));
        assert!(selects("amount BETWEEN 200 AND 300", &h));
        assert!(selects("amount NOT BETWEEN 1 AND 2", &h));
        assert!(selects("region IN ('eu', 'uk')", &h));
        assert!(selects("region NOT IN ('us')", &h));
        assert!(selects("region LIKE 'e%'", &h));
        assert!(selects("region LIKE '_u'", &h));
        assert!(!selects("region NOT LIKE 'e_'", &h));
        assert!(selects("name LIKE 'a\\_%' ESCAPE '\\'", &[("name", "a_b")]));
        assert!(!selects("name LIKE 'a\\_%' ESCAPE '\\'", &[("name", "ab")]));
        assert!(selects("missing IS NULL AND region IS NOT NULL", &h));
        assert!(selects("note = 'it''s'", &[("note", "it's")]));
        assert!(
            selects("x-type = 'a'", &[("x-type", "a")]),
            "dashes in names"
        );
    }

    #[test]
    fn a_missing_header_is_unknown_not_false() {
        // NOT of unknown is unknown: not selected either way.
        assert!(!selects("amount > 5", &[]));
        assert!(!selects("NOT (amount > 5)", &[]));
        assert!(selects("amount > 5 OR TRUE", &[]));
        assert!(!selects("amount IN (1, 2)", &[]));
        assert!(!selects("amount = 'abc'", &[("amount", "12")]));
    }

    #[test]
    fn errors_point_at_the_problem() {
        for (text, position, says) in [
            ("region = ", 9, "expected a header name or a value"),
            ("region == 'eu'", 8, "expected a header name or a value"),
            ("(a = 1", 6, "expected ')'"),
            ("a = 'open", 4, "not closed"),
            ("a = 1 b", 6, "more after"),
            ("a IN 1", 5, "'(' after IN"),
            ("a LIKE 5", 7, "string pattern"),
            ("a # 1", 2, "cannot read"),
            ("", 0, "empty"),
        ] {
            let e = Selector::parse(text).unwrap_err();
            assert_eq!(e.position, position, "{text}: {e}");
            assert!(e.to_string().contains(says), "{text}: {e}");
        }
        let deep = format!("{}a = 1{}", "(".repeat(40), ")".repeat(40));
        assert!(
            Selector::parse(&deep)
                .unwrap_err()
                .to_string()
                .contains("deeper")
        );
        let long = format!("a = '{}'", "x".repeat(5000));
        assert!(
            Selector::parse(&long)
                .unwrap_err()
                .to_string()
                .contains("4096")
        );
    }
}
