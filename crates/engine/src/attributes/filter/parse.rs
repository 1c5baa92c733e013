//! The filter language: a small recursive-descent parser into [`Expr`].
//!
//! ```text
//! expr       := and ( OR and )*
//! and        := unary ( AND unary )*
//! unary      := NOT unary | '(' expr ')' | condition
//! condition  := field op literal | field [NOT] IN '(' literal ( ',' literal )* ')'
//! op         := '=' | '!=' | '<' | '<=' | '>' | '>='
//! literal    := "string" | number | TRUE | FALSE
//! field      := [A-Za-z_] [A-Za-z0-9_.:-]*
//! ```
//!
//! Keywords are case-insensitive; strings take `\"` and `\\` escapes.
//! Positions in errors are character offsets (0-based) into the expression.

use super::FilterError;

/// The longest expression accepted: refused before any parsing.
pub const MAX_FILTER_LEN: usize = 64 * 1024;
/// The deepest nesting of parentheses and NOTs: a bound on recursion.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    /// The number as written, and its value as an integer when it is one.
    Num(f64, Option<i64>),
    Bool(bool),
}

impl Literal {
    pub fn type_name(&self) -> &'static str {
        match self {
            Literal::Str(_) => "string",
            Literal::Num(..) => "number",
            Literal::Bool(_) => "boolean",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// A parsed expression; positions point into the source for later errors.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Cmp {
        field: String,
        at: usize,
        op: Op,
        value: Literal,
        value_at: usize,
    },
    In {
        field: String,
        at: usize,
        values: Vec<(Literal, usize)>,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64, Option<i64>),
    Op(Op),
    LParen,
    RParen,
    Comma,
    End,
}

struct Lexer<'a> {
    chars: Vec<(usize, char)>,
    i: usize,
    src: &'a str,
}

impl Lexer<'_> {
    /// The next token and its character position.
    fn next(&mut self) -> Result<(Tok, usize), FilterError> {
        while self.i < self.chars.len() && self.chars[self.i].1.is_whitespace() {
            self.i += 1;
        }
        let at = self.i;
        let Some(&(_, c)) = self.chars.get(self.i) else {
            return Ok((Tok::End, at));
        };
        let peek = |k: usize| self.chars.get(self.i + k).map(|p| p.1);
        let tok = match c {
            '(' => {
                self.i += 1;
                Tok::LParen
            }
            ')' => {
                self.i += 1;
                Tok::RParen
            }
            ',' => {
                self.i += 1;
                Tok::Comma
            }
            '=' => {
                // Accept `==` as `=`, as most people type it.
                self.i += if peek(1) == Some('=') { 2 } else { 1 };
                Tok::Op(Op::Eq)
            }
            '!' if peek(1) == Some('=') => {
                self.i += 2;
                Tok::Op(Op::Ne)
            }
            '<' | '>' => {
                let eq = peek(1) == Some('=');
                self.i += 1 + usize::from(eq);
                Tok::Op(match (c, eq) {
                    ('<', false) => Op::Lt,
                    ('<', true) => Op::Le,
                    ('>', false) => Op::Gt,
                    _ => Op::Ge,
                })
            }
            '"' => {
                self.i += 1;
                let mut s = String::new();
                loop {
                    match self.chars.get(self.i).map(|p| p.1) {
                        None => return Err(FilterError::new(at, "unterminated string")),
                        Some('"') => {
                            self.i += 1;
                            break;
                        }
                        Some('\\') => match self.chars.get(self.i + 1).map(|p| p.1) {
                            Some(e @ ('"' | '\\')) => {
                                s.push(e);
                                self.i += 2;
                            }
                            _ => {
                                return Err(FilterError::new(
                                    self.i,
                                    "unknown escape: only \\\" and \\\\ are allowed",
                                ))
                            }
                        },
                        Some(ch) => {
                            s.push(ch);
                            self.i += 1;
                        }
                    }
                }
                Tok::Str(s)
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => {
                let start = self.i;
                self.i += 1;
                while let Some(ch) = self.chars.get(self.i).map(|p| p.1) {
                    let exp_sign =
                        (ch == '-' || ch == '+') && matches!(self.chars[self.i - 1].1, 'e' | 'E');
                    if ch.is_ascii_digit() || ch == '.' || ch == 'e' || ch == 'E' || exp_sign {
                        self.i += 1;
                    } else {
                        break;
                    }
                }
                let b0 = self.chars[start].0;
                let b1 = self.chars.get(self.i).map_or(self.src.len(), |p| p.0);
                let text = &self.src[b0..b1];
                let int = text.parse::<i64>().ok();
                match text.parse::<f64>() {
                    Ok(x) if x.is_finite() => Tok::Num(x, int),
                    _ => return Err(FilterError::new(at, format!("not a number: {text}"))),
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut s = String::new();
                while let Some(ch) = self.chars.get(self.i).map(|p| p.1) {
                    if ch.is_alphanumeric() || matches!(ch, '_' | '.' | ':' | '-') {
                        s.push(ch);
                        self.i += 1;
                    } else {
                        break;
                    }
                }
                Tok::Ident(s)
            }
            c => return Err(FilterError::new(at, format!("unexpected character {c:?}"))),
        };
        Ok((tok, at))
    }
}

struct Parser<'a> {
    lex: Lexer<'a>,
    tok: Tok,
    at: usize,
    depth: usize,
}

fn is_kw(t: &Tok, kw: &str) -> bool {
    matches!(t, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("{s:?}"),
        Tok::Str(s) => format!("string {s:?}"),
        Tok::Num(x, _) => format!("number {x}"),
        Tok::Op(o) => format!("{:?}", o.symbol()),
        Tok::LParen => "\"(\"".into(),
        Tok::RParen => "\")\"".into(),
        Tok::Comma => "\",\"".into(),
        Tok::End => "the end of the expression".into(),
    }
}

impl Parser<'_> {
    fn bump(&mut self) -> Result<(), FilterError> {
        (self.tok, self.at) = self.lex.next()?;
        Ok(())
    }

    fn expected(&self, what: &str) -> FilterError {
        FilterError::new(
            self.at,
            format!("expected {what}, found {}", describe(&self.tok)),
        )
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut parts = vec![self.and()?];
        while is_kw(&self.tok, "or") {
            self.bump()?;
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Expr::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut parts = vec![self.unary()?];
        while is_kw(&self.tok, "and") {
            self.bump()?;
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Expr::And(parts)
        })
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(FilterError::new(
                self.at,
                format!("nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        let e = if is_kw(&self.tok, "not") {
            self.bump()?;
            Expr::Not(Box::new(self.unary()?))
        } else if self.tok == Tok::LParen {
            self.bump()?;
            let e = self.or()?;
            if self.tok != Tok::RParen {
                return Err(self.expected("\")\" or AND/OR"));
            }
            self.bump()?;
            e
        } else {
            self.condition()?
        };
        self.depth -= 1;
        Ok(e)
    }

    fn literal(&mut self) -> Result<(Literal, usize), FilterError> {
        let at = self.at;
        let lit = match &self.tok {
            Tok::Str(s) => Literal::Str(s.clone()),
            Tok::Num(x, i) => Literal::Num(*x, *i),
            t if is_kw(t, "true") => Literal::Bool(true),
            t if is_kw(t, "false") => Literal::Bool(false),
            _ => return Err(self.expected("a value (a \"string\", a number, true or false)")),
        };
        self.bump()?;
        Ok((lit, at))
    }

    fn condition(&mut self) -> Result<Expr, FilterError> {
        let at = self.at;
        let field = match &self.tok {
            Tok::Ident(s)
                if !["and", "or", "not", "in", "true", "false"]
                    .iter()
                    .any(|k| s.eq_ignore_ascii_case(k)) =>
            {
                s.clone()
            }
            _ => return Err(self.expected("a field name, NOT or \"(\"")),
        };
        self.bump()?;
        let negated = is_kw(&self.tok, "not");
        if negated {
            self.bump()?;
            if !is_kw(&self.tok, "in") {
                return Err(self.expected("IN after NOT"));
            }
        }
        if is_kw(&self.tok, "in") {
            self.bump()?;
            if self.tok != Tok::LParen {
                return Err(self.expected("\"(\" after IN"));
            }
            self.bump()?;
            let mut values = vec![self.literal()?];
            while self.tok == Tok::Comma {
                self.bump()?;
                values.push(self.literal()?);
            }
            if self.tok != Tok::RParen {
                return Err(self.expected("\",\" or \")\""));
            }
            self.bump()?;
            let e = Expr::In { field, at, values };
            return Ok(if negated { Expr::Not(Box::new(e)) } else { e });
        }
        let Tok::Op(op) = self.tok else {
            return Err(self.expected("an operator (=, !=, <, <=, >, >=, IN)"));
        };
        self.bump()?;
        let (value, value_at) = self.literal()?;
        Ok(Expr::Cmp {
            field,
            at,
            op,
            value,
            value_at,
        })
    }
}

/// Parse a filter expression.
pub fn parse(src: &str) -> Result<Expr, FilterError> {
    if src.len() > MAX_FILTER_LEN {
        return Err(FilterError::new(
            0,
            format!(
                "the expression is {} bytes, over the limit of {MAX_FILTER_LEN}",
                src.len()
            ),
        ));
    }
    let mut p = Parser {
        lex: Lexer {
            chars: src.char_indices().collect(),
            i: 0,
            src,
        },
        tok: Tok::End,
        at: 0,
        depth: 0,
    };
    p.bump()?;
    if p.tok == Tok::End {
        return Err(FilterError::new(0, "the expression is empty"));
    }
    let e = p.or()?;
    if p.tok != Tok::End {
        return Err(p.expected("AND, OR or the end of the expression"));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_examples() {
        for src in [
            r#"lang = "sv" AND explicit = false AND popularity >= 50"#,
            r#"markets = "SE" AND NOT genre IN ("kids", "sleep")"#,
            r#"(year >= 2020 OR label = "label:7") AND kind != "audiobook""#,
            r#"a not in ("x") or b == -1.5e3"#,
        ] {
            parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        }
        let e = parse(r#"a = "x" AND (b < 3 OR NOT c = true)"#).unwrap();
        let want = Expr::And(vec![
            Expr::Cmp {
                field: "a".into(),
                at: 0,
                op: Op::Eq,
                value: Literal::Str("x".into()),
                value_at: 4,
            },
            Expr::Or(vec![
                Expr::Cmp {
                    field: "b".into(),
                    at: 13,
                    op: Op::Lt,
                    value: Literal::Num(3.0, Some(3)),
                    value_at: 17,
                },
                Expr::Not(Box::new(Expr::Cmp {
                    field: "c".into(),
                    at: 26,
                    op: Op::Eq,
                    value: Literal::Bool(true),
                    value_at: 30,
                })),
            ]),
        ]);
        assert_eq!(e, want);
    }

    #[test]
    fn escapes_and_case_insensitive_keywords() {
        let e = parse(r#"t = "say \"hi\" \\ ok" and NoT x In (1)"#).unwrap();
        let Expr::And(parts) = e else { panic!() };
        assert!(
            matches!(&parts[0], Expr::Cmp { value: Literal::Str(s), .. } if s == r#"say "hi" \ ok"#)
        );
        assert!(matches!(&parts[1], Expr::Not(_)));
    }

    #[test]
    fn errors_point_at_the_position() {
        let cases: [(&str, usize, &str); 9] = [
            ("lang = ", 7, "expected a value"),
            ("lang \"sv\"", 5, "expected an operator"),
            ("(a = 1", 6, "expected \")\""),
            ("a = 1 b = 2", 6, "expected AND, OR"),
            ("a = \"open", 4, "unterminated string"),
            ("a = \"x\\n\"", 6, "unknown escape"),
            ("a IN (1,)", 8, "expected a value"),
            ("a = 1 AND", 9, "expected a field name"),
            ("a # 1", 2, "unexpected character"),
        ];
        for (src, at, msg) in cases {
            let e = parse(src).unwrap_err();
            assert_eq!(e.position, at, "{src}: {e}");
            assert!(e.message.contains(msg), "{src}: {e}");
        }
        assert!(parse("   ").unwrap_err().message.contains("empty"));
        let deep = "(".repeat(100) + "a = 1" + &")".repeat(100);
        assert!(parse(&deep).unwrap_err().message.contains("nested"));
        let long = "a = 1 OR ".repeat(MAX_FILTER_LEN / 8) + "a = 1";
        assert!(parse(&long).unwrap_err().message.contains("over the limit"));
    }
}
