//! Metric math: the part of CloudWatch's expression language an alarm here may use.
//!
//! Query ids, numbers, `+ - * /`, unary minus, parentheses and `FILL(expr, number)`.
//! Series are combined period by period: a period missing on either side of an operator
//! is missing in the result (that is what `FILL` is for), and so is a result that is not a
//! finite number (a division by zero), since CloudWatch drops those datapoints too.

use std::collections::BTreeMap;
use std::fmt;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Number(f64),
    /// Another query's series, by its `Id`.
    Id(String),
    Neg(Box<Expr>),
    Binary(Op, Box<Expr>, Box<Expr>),
    /// `FILL(expr, value)`: missing periods of `expr` read as `value`.
    Fill(Box<Expr>, f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

impl Op {
    fn apply(self, a: f64, b: f64) -> f64 {
        match self {
            Op::Add => a + b,
            Op::Sub => a - b,
            Op::Mul => a * b,
            Op::Div => a / b,
        }
    }
}

/// Parses an `Expression`; the error says what was not understood.
pub fn parse(text: &str) -> Result<Expr, String> {
    let mut parser = Parser {
        tokens: tokenize(text)?,
        pos: 0,
    };
    let expr = parser.expr()?;
    match parser.peek() {
        None => Ok(expr),
        Some(t) => Err(format!("unexpected {t} after a complete expression")),
    }
}

impl Expr {
    /// The query ids the expression reads.
    pub fn ids(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_ids(&mut out);
        out
    }

    fn collect_ids<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Expr::Number(_) => {}
            Expr::Id(id) => out.push(id),
            Expr::Neg(e) | Expr::Fill(e, _) => e.collect_ids(out),
            Expr::Binary(_, l, r) => {
                l.collect_ids(out);
                r.collect_ids(out);
            }
        }
    }

    /// The expression over `len` periods, given the series of the queries it reads (an id
    /// without a series reads as missing throughout).
    pub fn eval(
        &self,
        series: &BTreeMap<String, Vec<Option<f64>>>,
        len: usize,
    ) -> Vec<Option<f64>> {
        match self {
            Expr::Number(n) => vec![Some(*n); len],
            Expr::Id(id) => series.get(id).cloned().unwrap_or_else(|| vec![None; len]),
            Expr::Neg(e) => e
                .eval(series, len)
                .into_iter()
                .map(|v| v.map(|x| -x))
                .collect(),
            Expr::Fill(e, value) => {
                let filled = e.eval(series, len).into_iter();
                filled.map(|v| v.or(Some(*value))).collect()
            }
            Expr::Binary(op, l, r) => {
                let (l, r) = (l.eval(series, len), r.eval(series, len));
                let pairs = l.into_iter().zip(r);
                pairs
                    .map(|(a, b)| Some(op.apply(a?, b?)).filter(|v| v.is_finite()))
                    .collect()
            }
        }
    }
}

/// An order in which every node comes after the nodes it depends on, and the nodes that
/// have none (they depend on an unknown id or, through others, on themselves).
pub(crate) fn order<'a>(nodes: &[(&'a str, Vec<&'a str>)]) -> (Vec<usize>, Vec<&'a str>) {
    let mut done: Vec<usize> = Vec::with_capacity(nodes.len());
    let mut progressed = true;
    while progressed {
        progressed = false;
        for (i, (_, deps)) in nodes.iter().enumerate() {
            let ready = deps.iter().all(|d| {
                done.iter()
                    .any(|&j| nodes.get(j).is_some_and(|n| n.0 == *d))
            });
            if !done.contains(&i) && ready {
                done.push(i);
                progressed = true;
            }
        }
    }
    let stuck = (0..nodes.len())
        .filter(|i| !done.contains(i))
        .filter_map(|i| nodes.get(i).map(|n| n.0))
        .collect();
    (done, stuck)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Num(f64),
    Ident(String),
    Sym(char),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Num(n) => write!(f, "number {n}"),
            Token::Ident(s) => write!(f, "`{s}`"),
            Token::Sym(c) => write!(f, "`{c}`"),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let (token, len) = if c.is_whitespace() {
            (None, c.len_utf8())
        } else if c.is_ascii_digit() || c == '.' {
            let n = prefix(rest, |c| c.is_ascii_digit() || c == '.');
            let value = n.parse().map_err(|_| format!("bad number `{n}`"))?;
            (Some(Token::Num(value)), n.len())
        } else if c.is_ascii_alphabetic() || c == '_' {
            let word = prefix(rest, |c| c.is_ascii_alphanumeric() || c == '_');
            (Some(Token::Ident(word.to_owned())), word.len())
        } else if "+-*/(),".contains(c) {
            (Some(Token::Sym(c)), 1)
        } else {
            return Err(format!("unexpected character `{c}`"));
        };
        tokens.extend(token);
        rest = rest.get(len..).unwrap_or_default();
    }
    Ok(tokens)
}

fn prefix(text: &str, keep: fn(char) -> bool) -> &str {
    let end = text.find(|c| !keep(c)).unwrap_or(text.len());
    text.get(..end).unwrap_or_default()
}

/// Recursive descent: `expr = term (+|- term)*`, `term = unary (*|/ unary)*`,
/// `unary = -unary | primary`, `primary = number | id | FILL(expr, number) | (expr)`.
struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        token
    }

    fn eat(&mut self, c: char) -> bool {
        let found = self.peek() == Some(&Token::Sym(c));
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        match self.next() {
            Some(Token::Sym(s)) if s == c => Ok(()),
            Some(t) => Err(format!("expected `{c}`, found {t}")),
            None => Err(format!("expected `{c}`, found the end")),
        }
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let mut left = self.term()?;
        loop {
            let op = if self.eat('+') {
                Op::Add
            } else if self.eat('-') {
                Op::Sub
            } else {
                return Ok(left);
            };
            left = Expr::Binary(op, Box::new(left), Box::new(self.term()?));
        }
    }

    fn term(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        loop {
            let op = if self.eat('*') {
                Op::Mul
            } else if self.eat('/') {
                Op::Div
            } else {
                return Ok(left);
            };
            left = Expr::Binary(op, Box::new(left), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat('-') {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        match self.next() {
            Some(Token::Num(n)) => Ok(Expr::Number(n)),
            Some(Token::Ident(name)) if self.eat('(') => self.call(&name),
            Some(Token::Ident(id)) => Ok(Expr::Id(id)),
            Some(Token::Sym('(')) => {
                let inner = self.expr()?;
                self.expect(')')?;
                Ok(inner)
            }
            Some(t) => Err(format!("unexpected {t}")),
            None => Err("unexpected end of the expression".to_owned()),
        }
    }

    /// A function call, after its `(`.
    fn call(&mut self, name: &str) -> Result<Expr, String> {
        if name != "FILL" {
            return Err(format!("function {name} is not supported (only FILL)"));
        }
        let series = self.expr()?;
        self.expect(',')?;
        let negative = self.eat('-');
        let value = match self.next() {
            Some(Token::Num(n)) if negative => -n,
            Some(Token::Num(n)) => n,
            Some(Token::Ident(mode)) => {
                return Err(format!("FILL(.., {mode}) is not supported, only a number"));
            }
            Some(t) => return Err(format!("FILL takes a number, found {t}")),
            None => return Err("FILL takes a number".to_owned()),
        };
        self.expect(')')?;
        Ok(Expr::Fill(Box::new(series), value))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn id(s: &str) -> Box<Expr> {
        Box::new(Expr::Id(s.to_owned()))
    }

    #[test]
    fn parses_the_templates_expression() {
        let e = parse("FILL(reads, 0) + FILL(writes, 0)").unwrap();
        assert_eq!(
            e,
            Expr::Binary(
                Op::Add,
                Box::new(Expr::Fill(id("reads"), 0.0)),
                Box::new(Expr::Fill(id("writes"), 0.0)),
            )
        );
        assert_eq!(e.ids(), ["reads", "writes"]);
    }

    #[test]
    fn precedence_parentheses_and_unary_minus() {
        let s = |pairs: &[(&str, f64)]| -> BTreeMap<String, Vec<Option<f64>>> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), vec![Some(*v)]))
                .collect()
        };
        let series = s(&[("a", 2.0), ("b", 3.0), ("c", 4.0)]);
        let at = |text: &str| parse(text).unwrap().eval(&series, 1);
        assert_eq!(at("a + b * c"), [Some(14.0)]);
        assert_eq!(at("(a + b) * c"), [Some(20.0)]);
        assert_eq!(at("a - b - c"), [Some(-5.0)]);
        assert_eq!(at("c / a / a"), [Some(1.0)]);
        assert_eq!(at("-a * -b"), [Some(6.0)]);
        assert_eq!(at("100 * a / (b + 1.5)"), [Some(2.0 * 100.0 / 4.5)]);
        assert_eq!(at("FILL(a, -1)"), [Some(2.0)]);
    }

    #[test]
    fn missing_propagates_unless_filled() {
        let series: BTreeMap<String, Vec<Option<f64>>> = [
            ("a".to_owned(), vec![Some(1.0), None, None]),
            ("b".to_owned(), vec![Some(2.0), Some(3.0), None]),
        ]
        .into();
        let at = |text: &str| parse(text).unwrap().eval(&series, 3);
        assert_eq!(at("a + b"), [Some(3.0), None, None]);
        assert_eq!(at("FILL(a, 0) + b"), [Some(3.0), Some(3.0), None]);
        assert_eq!(
            at("FILL(a, 0) + FILL(b, 0)"),
            [Some(3.0), Some(3.0), Some(0.0)]
        );
        assert_eq!(at("b / (a - 1)"), [None, None, None]);
        assert_eq!(at("FILL(zzz, 5)"), [Some(5.0); 3]);
    }

    #[test]
    fn what_is_not_understood_is_said() {
        let err = |text: &str| parse(text).unwrap_err();
        assert!(err("SUM(METRICS())").contains("SUM is not supported"));
        assert!(err("FILL(a, REPEAT)").contains("REPEAT) is not supported"));
        assert!(err("a +").contains("end"));
        assert!(err("(a + b").contains("expected `)`"));
        assert!(err("a b").contains("unexpected `b`"));
        assert!(err("a % b").contains("`%`"));
        assert!(err("1.2.3").contains("bad number"));
    }

    #[test]
    fn order_puts_dependencies_first_and_names_cycles() {
        let nodes = [("e", vec!["a", "b"]), ("a", vec![]), ("b", vec!["a"])];
        let (done, stuck) = order(&nodes);
        assert_eq!(done, [1, 2, 0]);
        assert!(stuck.is_empty());
        let nodes = [("x", vec!["y"]), ("y", vec!["x"]), ("z", vec![])];
        let (done, stuck) = order(&nodes);
        assert_eq!((done, stuck), (vec![2], vec!["x", "y"]));
    }
}
