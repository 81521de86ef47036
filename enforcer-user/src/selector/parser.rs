//! Tokenizer and recursive-descent parser for Calico selectors.
//!
//! A port of Calico's `libcalico-go/lib/selector/tokenizer/tokenizer.go` and
//! `libcalico-go/lib/selector/parser/parser.go` that accepts exactly the same language, with
//! error messages that say what was expected and where. Points where the port follows Calico
//! to the letter, deliberately:
//!
//! * Whitespace is only space and tab (Go's `strings.TrimLeft(input, " \t")`); a newline or
//!   carriage return anywhere outside a string literal is an error.
//! * Strings are `'...'` or `"..."` with no escapes: a string ends at the next quote of the
//!   same kind, so `"'"` and `'"'` are fine but no literal can contain both kinds of quote.
//! * A label key is a run of `[A-Za-z0-9_./-]` (the tokenizer's `findIdentifier`).
//! * Operator words are recognised only right after a label key, and by prefix, with the
//!   whitespace between words optional: `a startswith "x"`, `a notin {"x"}` and
//!   `a contains"x"` parse, and `contains contains "x"` is a `contains` test on label
//!   `contains`.
//! * `has(`, `all(` and `global(` must be written without a space before `(`, but may have
//!   spaces inside: `has( a )`. Without the `(` they are ordinary label keys (`all == "x"`).
//! * Leading `!`s on an operand collapse (`!!has(a)` is `has(a)`); `!` binds tighter than
//!   `&&`, which binds tighter than `||`; `!a == "b"` means `!(a == "b")`.
//! * Sets may be empty (`a in {}` matches nothing, `a not in {}` matches everything) and may
//!   end with a trailing comma (`{"a",}`), but `{,}` is an error. Members are de-duplicated
//!   and sorted.
//!
//! Calico's parser recurses without limit; this one refuses parentheses nested more than
//! [`MAX_NESTING`] deep so that hostile input cannot overflow the stack.

use std::collections::BTreeSet;

use super::ast::Expr;

/// Deepest parenthesis nesting accepted.
pub(crate) const MAX_NESTING: usize = 200;

/// What `expected ...` says where an operand (a term) must start.
const EXPECTED_TERM: &str = "expected a label key, `all()`, `global()`, `has(`, `!` or `(`";

/// A parse failure: byte offset into the input and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParseError {
    pub(crate) offset: usize,
    pub(crate) message: String,
}

/// Constructor of a `key op "value"` node.
type StringTest = fn(String, String) -> Expr;

fn err<T>(offset: usize, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        offset,
        message: message.into(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    Label(&'a str),
    Str(&'a str),
    LBrace,
    RBrace,
    Comma,
    Eq,
    Ne,
    In,
    NotIn,
    Contains,
    StartsWith,
    EndsWith,
    Not,
    All,
    Global,
    Has(&'a str),
    LParen,
    RParen,
    And,
    Or,
    Eof,
    /// A character that starts no token; the parser reports it with what it expected there.
    Unexpected(char),
}

impl Tok<'_> {
    /// How an error message names this token after "found".
    fn describe(&self) -> String {
        match self {
            Tok::Label(k) => format!("label key `{k}`"),
            Tok::Str(s) => {
                let mut out = String::from("the string ");
                // Cannot fail: writing to a String.
                let _ = super::ast::write_quoted(&mut out, s);
                out
            }
            Tok::LBrace => "`{`".into(),
            Tok::RBrace => "`}`".into(),
            Tok::Comma => "`,`".into(),
            Tok::Eq => "`==`".into(),
            Tok::Ne => "`!=`".into(),
            Tok::In => "`in`".into(),
            Tok::NotIn => "`not in`".into(),
            Tok::Contains => "`contains`".into(),
            Tok::StartsWith => "`starts with`".into(),
            Tok::EndsWith => "`ends with`".into(),
            Tok::Not => "`!`".into(),
            Tok::All => "`all()`".into(),
            Tok::Global => "`global()`".into(),
            Tok::Has(k) => format!("`has({k})`"),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::And => "`&&`".into(),
            Tok::Or => "`||`".into(),
            Tok::Eof => "the end of the selector".into(),
            Tok::Unexpected(c @ ('\n' | '\r')) => format!(
                "the character {c:?} (only spaces and tabs may separate the parts of a selector)"
            ),
            Tok::Unexpected(c) => format!("the character {c:?}"),
        }
    }
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-')
}

/// True if `key` is a label key the tokenizer reads as one token.
pub(crate) fn is_label_key(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(is_key_byte)
}

/// Context-sensitive tokenizer, driven one token at a time by the parser. Tokenizing lazily
/// accepts the same language as Calico's tokenize-everything-first approach (a selector is
/// accepted only if every token up to the end was read), and lets tokenizer failures that
/// Calico reports as "unexpected characters" be reported with the parser's expectations.
struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    /// The previous token was a label key, so words are operators (Calico's
    /// `lastTokKind == TokLabel`).
    after_label: Option<&'a str>,
}

impl<'a> Lexer<'a> {
    fn byte(&self, at: usize) -> Option<u8> {
        self.src.as_bytes().get(at).copied()
    }

    fn rest_at(&self, at: usize) -> &'a str {
        self.src.get(at..).unwrap_or("")
    }

    fn skip_space_from(&self, mut at: usize) -> usize {
        while self.byte(at).is_some_and(is_space) {
            at += 1;
        }
        at
    }

    fn key_len_at(&self, at: usize) -> usize {
        self.rest_at(at)
            .bytes()
            .take_while(|b| is_key_byte(*b))
            .count()
    }

    /// Reads the next token, returning it with its starting byte offset.
    fn next(&mut self) -> Result<(Tok<'a>, usize), ParseError> {
        let start = self.skip_space_from(self.pos);
        self.pos = start;
        let tok = self.token_at(start)?;
        self.after_label = match tok {
            Tok::Label(k) => Some(k),
            _ => None,
        };
        Ok((tok, start))
    }

    fn token_at(&mut self, start: usize) -> Result<Tok<'a>, ParseError> {
        let Some(b) = self.byte(start) else {
            return Ok(Tok::Eof);
        };
        let single = |lexer: &mut Self, tok| {
            lexer.pos = start + 1;
            Ok(tok)
        };
        let double = |lexer: &mut Self, second: u8, tok, message: &str| {
            if lexer.byte(start + 1) == Some(second) {
                lexer.pos = start + 2;
                Ok(tok)
            } else {
                err(start, message)
            }
        };
        match b {
            b'(' => single(self, Tok::LParen),
            b')' => single(self, Tok::RParen),
            b'{' => single(self, Tok::LBrace),
            b'}' => single(self, Tok::RBrace),
            b',' => single(self, Tok::Comma),
            b'"' | b'\'' => {
                let quote = char::from(b);
                let body = self.rest_at(start + 1);
                match body.find(quote) {
                    Some(len) => {
                        self.pos = start + 1 + len + 1;
                        Ok(Tok::Str(body.get(..len).unwrap_or("")))
                    }
                    None => err(
                        start,
                        format!(
                            "unterminated string: expected a closing {quote} for the string starting here"
                        ),
                    ),
                }
            }
            b'=' => double(
                self,
                b'=',
                Tok::Eq,
                "expected `==` (a single `=` is not an operator)",
            ),
            b'&' => double(
                self,
                b'&',
                Tok::And,
                "expected `&&` (a single `&` is not an operator)",
            ),
            b'|' => double(
                self,
                b'|',
                Tok::Or,
                "expected `||` (a single `|` is not an operator)",
            ),
            b'!' => {
                if self.byte(start + 1) == Some(b'=') {
                    self.pos = start + 2;
                    Ok(Tok::Ne)
                } else {
                    single(self, Tok::Not)
                }
            }
            _ => match self.after_label {
                Some(label) => self.operator_word(start, label),
                None => self.word(start),
            },
        }
    }

    /// After a label key: `contains`, `starts with`, `ends with`, `not in` or `in`, matched by
    /// prefix as Calico does.
    fn operator_word(&mut self, start: usize, label: &str) -> Result<Tok<'a>, ParseError> {
        let rest = self.rest_at(start);
        let two_words = |lexer: &mut Self, first: &str, second: &str, tok| {
            let at = lexer.skip_space_from(start + first.len());
            if lexer.rest_at(at).starts_with(second) {
                lexer.pos = at + second.len();
                Ok(tok)
            } else {
                err(
                    at,
                    format!("expected `{second}` after `{first}` (operator `{first} {second}`)"),
                )
            }
        };
        if rest.starts_with("contains") {
            self.pos = start + "contains".len();
            Ok(Tok::Contains)
        } else if rest.starts_with("starts") {
            two_words(self, "starts", "with", Tok::StartsWith)
        } else if rest.starts_with("ends") {
            two_words(self, "ends", "with", Tok::EndsWith)
        } else if rest.starts_with("not") {
            two_words(self, "not", "in", Tok::NotIn)
        } else if rest.starts_with("in") {
            self.pos = start + "in".len();
            Ok(Tok::In)
        } else {
            let found = rest.chars().next().map(Tok::Unexpected).unwrap_or(Tok::Eof);
            err(
                start,
                format!("{}, found {}", expected_operator(label), found.describe()),
            )
        }
    }

    /// Not after a label key: `has(k)`, `all()`, `global()` or a label key.
    fn word(&mut self, start: usize) -> Result<Tok<'a>, ParseError> {
        let rest = self.rest_at(start);
        let close = |lexer: &mut Self, at: usize, what: &str| {
            let at = lexer.skip_space_from(at);
            if lexer.byte(at) == Some(b')') {
                lexer.pos = at + 1;
                Ok(())
            } else {
                err(at, format!("expected `)` to close `{what}(`"))
            }
        };
        if rest.starts_with("has(") {
            let key_at = self.skip_space_from(start + "has(".len());
            let len = self.key_len_at(key_at);
            if len == 0 {
                return err(key_at, "expected a label key after `has(`");
            }
            let key = self.src.get(key_at..key_at + len).unwrap_or("");
            close(self, key_at + len, "has")?;
            Ok(Tok::Has(key))
        } else if rest.starts_with("all(") {
            close(self, start + "all(".len(), "all")?;
            Ok(Tok::All)
        } else if rest.starts_with("global(") {
            close(self, start + "global(".len(), "global")?;
            Ok(Tok::Global)
        } else {
            let len = self.key_len_at(start);
            if len > 0 {
                self.pos = start + len;
                Ok(Tok::Label(rest.get(..len).unwrap_or("")))
            } else {
                // Not consumed: the parser reports it, saying what it expected here.
                Ok(rest.chars().next().map(Tok::Unexpected).unwrap_or(Tok::Eof))
            }
        }
    }
}

fn expected_operator(label: &str) -> String {
    format!(
        "expected an operator after label key `{label}`: `==`, `!=`, `in`, `not in`, `contains`, \
         `starts with` or `ends with`"
    )
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<(Tok<'a>, usize)>,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn peek(&mut self) -> Result<Tok<'a>, ParseError> {
        match self.peeked {
            Some((tok, _)) => Ok(tok),
            None => {
                let next = self.lexer.next()?;
                self.peeked = Some(next);
                Ok(next.0)
            }
        }
    }

    fn bump(&mut self) -> Result<(Tok<'a>, usize), ParseError> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lexer.next(),
        }
    }

    /// `and_expr ('||' and_expr)*`
    fn or_expr(&mut self) -> Result<Expr, ParseError> {
        let mut operands = vec![self.and_expr()?];
        while self.peek()? == Tok::Or {
            self.bump()?;
            operands.push(self.and_expr()?);
        }
        Ok(if operands.len() == 1 {
            operands.remove(0)
        } else {
            Expr::Or(operands)
        })
    }

    /// `operation ('&&' operation)*`
    fn and_expr(&mut self) -> Result<Expr, ParseError> {
        let mut operands = vec![self.operation()?];
        while self.peek()? == Tok::And {
            self.bump()?;
            operands.push(self.operation()?);
        }
        Ok(if operands.len() == 1 {
            operands.remove(0)
        } else {
            Expr::And(operands)
        })
    }

    /// `'!'* (has(k) | all() | global() | k op value | '(' or_expr ')')`
    fn operation(&mut self) -> Result<Expr, ParseError> {
        let mut negated = false;
        while self.peek()? == Tok::Not {
            self.bump()?;
            negated = !negated;
        }
        let (tok, at) = self.bump()?;
        let expr = match tok {
            Tok::Has(k) => Expr::Has(k.to_owned()),
            Tok::All => Expr::All,
            Tok::Global => Expr::Global,
            Tok::Label(k) => self.comparison(k)?,
            Tok::LParen => {
                if self.depth >= MAX_NESTING {
                    return err(
                        at,
                        format!("parentheses nested more than {MAX_NESTING} deep"),
                    );
                }
                self.depth += 1;
                let inner = self.or_expr()?;
                self.depth -= 1;
                let (close, close_at) = self.bump()?;
                if close != Tok::RParen {
                    return err(
                        close_at,
                        format!(
                            "expected `&&`, `||` or `)` (to close the `(` at column {}), found {}",
                            column_of(self.lexer.src, at),
                            close.describe()
                        ),
                    );
                }
                inner
            }
            other => return err(at, format!("{EXPECTED_TERM}, found {}", other.describe())),
        };
        Ok(if negated { expr.negate() } else { expr })
    }

    /// The rest of `k op value` after the label key `k`.
    fn comparison(&mut self, key: &str) -> Result<Expr, ParseError> {
        let (op, op_at) = self.bump()?;
        let k = key.to_owned();
        let string_op: Option<(StringTest, &str)> = match op {
            Tok::Eq => Some((Expr::Eq, "==")),
            Tok::Ne => Some((Expr::Ne, "!=")),
            Tok::Contains => Some((Expr::Contains, "contains")),
            Tok::StartsWith => Some((Expr::StartsWith, "starts with")),
            Tok::EndsWith => Some((Expr::EndsWith, "ends with")),
            _ => None,
        };
        if let Some((make, name)) = string_op {
            let (value, at) = self.bump()?;
            return match value {
                Tok::Str(v) => Ok(make(k, v.to_owned())),
                other => err(
                    at,
                    format!(
                        "expected a quoted string ('...' or \"...\") after `{name}`, found {}",
                        other.describe()
                    ),
                ),
            };
        }
        let make_set: fn(String, BTreeSet<String>) -> Expr = match op {
            Tok::In => Expr::In,
            Tok::NotIn => Expr::NotIn,
            other => {
                return err(
                    op_at,
                    format!("{}, found {}", expected_operator(key), other.describe()),
                );
            }
        };
        let name = if op == Tok::In { "in" } else { "not in" };
        let (open, at) = self.bump()?;
        if open != Tok::LBrace {
            return err(
                at,
                format!(
                    "expected a set literal `{{...}}` after `{name}`, found {}",
                    open.describe()
                ),
            );
        }
        let mut values = BTreeSet::new();
        loop {
            let (tok, at) = self.bump()?;
            match tok {
                Tok::RBrace => break,
                Tok::Str(v) => {
                    values.insert(v.to_owned());
                    let (sep, at) = self.bump()?;
                    match sep {
                        Tok::Comma => {}
                        Tok::RBrace => break,
                        other => {
                            return err(
                                at,
                                format!(
                                    "expected `,` or `}}` in a set, found {}",
                                    other.describe()
                                ),
                            );
                        }
                    }
                }
                other => {
                    return err(
                        at,
                        format!(
                            "expected a quoted string or `}}` in a set, found {}",
                            other.describe()
                        ),
                    );
                }
            }
        }
        Ok(make_set(k, values))
    }
}

/// 1-based column (in characters) of byte offset `offset` in `src`.
pub(crate) fn column_of(src: &str, offset: usize) -> usize {
    src.get(..offset).map_or(offset, |s| s.chars().count()) + 1
}

/// Parses a whole selector. Empty (or space/tab-only) text is `all()`.
pub(crate) fn parse(src: &str) -> Result<Expr, ParseError> {
    let mut parser = Parser {
        lexer: Lexer {
            src,
            pos: 0,
            after_label: None,
        },
        peeked: None,
        depth: 0,
    };
    if parser.peek()? == Tok::Eof {
        return Ok(Expr::All);
    }
    let expr = parser.or_expr()?;
    let (tok, at) = parser.bump()?;
    if tok != Tok::Eof {
        let hint = if tok == Tok::RParen {
            " (this `)` has no matching `(`)"
        } else {
            ""
        };
        return err(
            at,
            format!(
                "expected `&&`, `||` or the end of the selector, found {}{hint}",
                tok.describe()
            ),
        );
    }
    Ok(expr)
}
