//! The expression language of SPEC §2: constants, single-quoted strings,
//! integers, `== != < <= > >= && || !`, parentheses, `starts_with`,
//! `ends_with`, `contains`, and the outbound variables.
//!
//! Hand-written rather than borrowed: the maintained expression crates accept
//! far more (arithmetic, assignments, their own string syntax), and every
//! extra form is one more way for an operator to write something that parses
//! but does not mean what they think. Errors carry the column.
//!
//! Besides parsing and evaluation this module finds `then` branches that can
//! never be reached because an earlier `if` always holds whenever theirs does
//! (the `retry_num > 0` before `retry_num > 1` mistake).

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A value an expression produces.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    Int(i64),
    Str(String),
    Bool(bool),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    fn type_name(&self) -> Type {
        match self {
            Value::Int(_) => Type::Int,
            Value::Str(_) => Type::Str,
            Value::Bool(_) => Type::Bool,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Str(s) => write!(f, "{s}"),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Int,
    Str,
    Bool,
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Type::Int => "integer",
            Type::Str => "string",
            Type::Bool => "boolean",
        })
    }
}

/// The variables of outbound expressions (SPEC §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Var {
    RetryNum,
    LastError,
    Mx,
    RcptDomain,
    Sender,
    SenderDomain,
}

impl Var {
    pub const ALL: [Var; 6] = [
        Var::RetryNum,
        Var::LastError,
        Var::Mx,
        Var::RcptDomain,
        Var::Sender,
        Var::SenderDomain,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Var::RetryNum => "retry_num",
            Var::LastError => "last_error",
            Var::Mx => "mx",
            Var::RcptDomain => "rcpt_domain",
            Var::Sender => "sender",
            Var::SenderDomain => "sender_domain",
        }
    }

    fn from_name(name: &str) -> Option<Var> {
        Var::ALL.into_iter().find(|v| v.name() == name)
    }

    fn ty(self) -> Type {
        match self {
            Var::RetryNum => Type::Int,
            _ => Type::Str,
        }
    }
}

/// The values of the variables for one evaluation.
#[derive(Clone, Debug, Default)]
pub struct Vars {
    pub retry_num: i64,
    pub last_error: String,
    pub mx: String,
    pub rcpt_domain: String,
    pub sender: String,
    pub sender_domain: String,
}

impl Vars {
    fn get(&self, v: Var) -> Value {
        match v {
            Var::RetryNum => Value::Int(self.retry_num),
            Var::LastError => Value::Str(self.last_error.clone()),
            Var::Mx => Value::Str(self.mx.clone()),
            Var::RcptDomain => Value::Str(self.rcpt_domain.clone()),
            Var::Sender => Value::Str(self.sender.clone()),
            Var::SenderDomain => Value::Str(self.sender_domain.clone()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl BinOp {
    fn symbol(self) -> &'static str {
        match self {
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    StartsWith,
    EndsWith,
    Contains,
}

impl Func {
    fn from_name(name: &str) -> Option<Func> {
        match name {
            "starts_with" => Some(Func::StartsWith),
            "ends_with" => Some(Func::EndsWith),
            "contains" => Some(Func::Contains),
            _ => None,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Func::StartsWith => "starts_with",
            Func::EndsWith => "ends_with",
            Func::Contains => "contains",
        }
    }
}

/// A parsed expression text.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Lit(Value),
    Var(Var),
    Not(Box<Node>),
    Bin(BinOp, Box<Node>, Box<Node>),
    Call(Func, Box<Node>, Box<Node>),
}

// ---------------------------------------------------------------- lexing

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Str(String),
    Int(i64),
    Word(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
}

/// A syntax error with its 1-based column.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub column: usize,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "syntax error at column {}: {}",
            self.column, self.message
        )
    }
}

fn err<T>(column: usize, message: impl Into<String>) -> Result<T, SyntaxError> {
    Err(SyntaxError {
        column,
        message: message.into(),
    })
}

fn is_word_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

/// Bare words may hold `-` and `.` so that `disable-tls` or `daily` can be
/// written without quotes; there is no arithmetic to confuse them with.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'
}

fn lex(text: &str) -> Result<Vec<(Tok, usize)>, SyntaxError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return err(col, "unterminated string (missing ')"),
                    Some('\\') if matches!(chars.get(i + 1), Some('\'') | Some('\\')) => {
                        s.push(chars[i + 1]);
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        s.push(*ch);
                        i += 1;
                    }
                }
            }
            out.push((Tok::Str(s), col));
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            if i < chars.len() && is_word_start(chars[i]) {
                // e.g. `5m` or `1d`: a bare word starting with a digit.
                while i < chars.len() && is_word_char(chars[i]) {
                    i += 1;
                }
                out.push((Tok::Word(chars[start..i].iter().collect()), col));
                continue;
            }
            let digits: String = chars[start..i].iter().collect();
            let n = digits
                .parse::<i64>()
                .or_else(|_| err(col, "integer too large"))?;
            out.push((Tok::Int(n), col));
            continue;
        }
        if is_word_start(c) {
            let start = i;
            while i < chars.len() && is_word_char(chars[i]) {
                i += 1;
            }
            out.push((Tok::Word(chars[start..i].iter().collect()), col));
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let op2 = ["==", "!=", "<=", ">=", "&&", "||"]
            .into_iter()
            .find(|op| *op == two);
        if let Some(op) = op2 {
            out.push((Tok::Op(op), col));
            i += 2;
            continue;
        }
        let tok = match c {
            '<' => Tok::Op("<"),
            '>' => Tok::Op(">"),
            '!' => Tok::Op("!"),
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            '=' => return err(col, "'=' is not an operator; use '==' to compare"),
            '&' => return err(col, "'&' is not an operator; use '&&'"),
            '|' => return err(col, "'|' is not an operator; use '||'"),
            '"' => return err(col, "strings are written in single quotes, e.g. 'default'"),
            other => return err(col, format!("unexpected character '{other}'")),
        };
        out.push((tok, col));
        i += 1;
    }
    Ok(out)
}

// ---------------------------------------------------------------- parsing

/// Bounds on an expression, so that parsing and evaluating it (all
/// recursive) cannot overflow a thread's stack: fuzzing found that 4 600
/// nested parentheses overflow a 2 MiB stack (a tokio worker's, a test
/// thread's). No real expression comes near either bound.
const MAX_TOKENS: usize = 1000;
const MAX_NESTING: usize = 32;

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    end_col: usize,
    /// Open parentheses, `!` and function calls around the current token.
    nesting: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }
    fn col(&self) -> usize {
        self.toks
            .get(self.pos)
            .map(|(_, c)| *c)
            .unwrap_or(self.end_col)
    }
    fn bump(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|(t, _)| t.clone());
        self.pos += 1;
        t
    }
    fn eat_op(&mut self, op: &str) -> bool {
        if self.peek() == Some(&Tok::Op(static_op(op))) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Node, SyntaxError> {
        let mut left = self.and()?;
        while self.eat_op("||") {
            let right = self.and()?;
            left = Node::Bin(BinOp::Or, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Node, SyntaxError> {
        let mut left = self.cmp()?;
        while self.eat_op("&&") {
            let right = self.cmp()?;
            left = Node::Bin(BinOp::And, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn cmp(&mut self) -> Result<Node, SyntaxError> {
        let left = self.unary()?;
        let op = match self.peek() {
            Some(Tok::Op("==")) => BinOp::Eq,
            Some(Tok::Op("!=")) => BinOp::Ne,
            Some(Tok::Op("<")) => BinOp::Lt,
            Some(Tok::Op("<=")) => BinOp::Le,
            Some(Tok::Op(">")) => BinOp::Gt,
            Some(Tok::Op(">=")) => BinOp::Ge,
            _ => return Ok(left),
        };
        self.pos += 1;
        let right = self.unary()?;
        if let Some(Tok::Op(o)) = self.peek() {
            if ["==", "!=", "<", "<=", ">", ">="].contains(o) {
                return err(
                    self.col(),
                    "comparisons cannot be chained; use && and parentheses",
                );
            }
        }
        Ok(Node::Bin(op, Box::new(left), Box::new(right)))
    }

    /// Enters one more level of nesting (at column `col`), or refuses.
    fn nest(&mut self, col: usize) -> Result<(), SyntaxError> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return err(
                col,
                format!("expression nested too deeply (more than {MAX_NESTING} levels of parentheses, '!' and calls)"),
            );
        }
        Ok(())
    }

    fn unary(&mut self) -> Result<Node, SyntaxError> {
        let col = self.col();
        if self.eat_op("!") {
            self.nest(col)?;
            let inner = self.unary()?;
            self.nesting -= 1;
            return Ok(Node::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Node, SyntaxError> {
        let col = self.col();
        match self.bump() {
            Some(Tok::Str(s)) => Ok(Node::Lit(Value::Str(s))),
            Some(Tok::Int(n)) => Ok(Node::Lit(Value::Int(n))),
            Some(Tok::LParen) => {
                self.nest(col)?;
                let inner = self.or()?;
                if self.bump() != Some(Tok::RParen) {
                    return err(self.col_prev(), "expected ')'");
                }
                self.nesting -= 1;
                Ok(inner)
            }
            Some(Tok::Word(w)) => self.word(w, col),
            Some(Tok::RParen) => err(col, "unexpected ')'"),
            Some(Tok::Comma) => err(col, "unexpected ','"),
            Some(Tok::Op(o)) => err(col, format!("expected a value before '{o}'")),
            None => err(col, "unexpected end of expression"),
        }
    }

    fn col_prev(&self) -> usize {
        self.toks
            .get(self.pos.saturating_sub(1))
            .map(|(_, c)| *c)
            .unwrap_or(self.end_col)
    }

    fn word(&mut self, w: String, col: usize) -> Result<Node, SyntaxError> {
        if self.peek() == Some(&Tok::LParen) {
            let Some(func) = Func::from_name(&w) else {
                return err(
                    col,
                    format!("unknown function '{w}' (known: starts_with, ends_with, contains)"),
                );
            };
            self.pos += 1;
            self.nest(col)?;
            let a = self.or()?;
            if self.bump() != Some(Tok::Comma) {
                return err(
                    self.col_prev(),
                    format!("{w} takes two arguments: expected ','"),
                );
            }
            let b = self.or()?;
            if self.bump() != Some(Tok::RParen) {
                return err(
                    self.col_prev(),
                    format!("{w} takes two arguments: expected ')'"),
                );
            }
            self.nesting -= 1;
            return Ok(Node::Call(func, Box::new(a), Box::new(b)));
        }
        Ok(match w.as_str() {
            "true" => Node::Lit(Value::Bool(true)),
            "false" => Node::Lit(Value::Bool(false)),
            _ => match Var::from_name(&w) {
                Some(v) => Node::Var(v),
                None => Node::Lit(Value::Str(w)),
            },
        })
    }
}

fn static_op(op: &str) -> &'static str {
    ["==", "!=", "<=", ">=", "&&", "||", "<", ">", "!"]
        .into_iter()
        .find(|o| *o == op)
        .unwrap_or("")
}

/// Parses one expression text.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let toks = lex(text)?;
    if toks.len() > MAX_TOKENS {
        return err(
            toks[MAX_TOKENS].1,
            format!("expression too long (more than {MAX_TOKENS} tokens)"),
        );
    }
    let mut p = Parser {
        toks,
        pos: 0,
        end_col: text.chars().count() + 1,
        nesting: 0,
    };
    if p.peek().is_none() {
        return err(1, "empty expression");
    }
    let node = p.or()?;
    if p.peek().is_some() {
        let col = p.col();
        return err(
            col,
            "unexpected text after the expression (missing && or ||?)",
        );
    }
    Ok(node)
}

// ---------------------------------------------------------------- typing

impl Node {
    /// The static type, or why the expression is ill-typed.
    pub fn type_of(&self, allowed: &[Var]) -> Result<Type, String> {
        match self {
            Node::Lit(v) => Ok(v.type_name()),
            Node::Var(v) if allowed.contains(v) => Ok(v.ty()),
            Node::Var(v) => Err(format!(
                "the variable {} is not available in this expression",
                v.name()
            )),
            Node::Not(inner) => match inner.type_of(allowed)? {
                Type::Bool => Ok(Type::Bool),
                t => Err(format!("'!' needs a boolean, found {t}")),
            },
            Node::Call(f, a, b) => {
                for arg in [a, b] {
                    let t = arg.type_of(allowed)?;
                    if t != Type::Str {
                        return Err(format!("{} takes strings, found {t}", f.name()));
                    }
                }
                Ok(Type::Bool)
            }
            Node::Bin(op, a, b) => {
                let (ta, tb) = (a.type_of(allowed)?, b.type_of(allowed)?);
                match op {
                    BinOp::And | BinOp::Or => {
                        if ta != Type::Bool || tb != Type::Bool {
                            return Err(format!(
                                "'{}' needs booleans on both sides, found {ta} and {tb}",
                                op.symbol()
                            ));
                        }
                    }
                    BinOp::Eq | BinOp::Ne => {
                        if ta != tb {
                            return Err(format!(
                                "'{}' compares a {ta} with a {tb}; they can never be equal",
                                op.symbol()
                            ));
                        }
                    }
                    _ => {
                        if ta != Type::Int || tb != Type::Int {
                            return Err(format!(
                                "'{}' compares integers, found {ta} and {tb}",
                                op.symbol()
                            ));
                        }
                    }
                }
                Ok(Type::Bool)
            }
        }
    }

    /// Evaluates the node. Static typing happens at configuration time, so a
    /// mismatch here can only mean a bug; it yields `false` rather than a panic.
    pub fn eval(&self, vars: &Vars) -> Value {
        self.eval_with(&|v| vars.get(v), &|_| None)
    }

    fn eval_with(&self, var: &dyn Fn(Var) -> Value, atom: &dyn Fn(&Node) -> Option<bool>) -> Value {
        if let Some(b) = atom(self) {
            return Value::Bool(b);
        }
        match self {
            Node::Lit(v) => v.clone(),
            Node::Var(v) => var(*v),
            Node::Not(inner) => Value::Bool(inner.eval_with(var, atom) != Value::Bool(true)),
            Node::Call(f, a, b) => {
                let (a, b) = (a.eval_with(var, atom), b.eval_with(var, atom));
                let (Some(a), Some(b)) = (a.as_str(), b.as_str()) else {
                    return Value::Bool(false);
                };
                Value::Bool(match f {
                    Func::StartsWith => a.starts_with(b),
                    Func::EndsWith => a.ends_with(b),
                    Func::Contains => a.contains(b),
                })
            }
            Node::Bin(op, a, b) => {
                let a = a.eval_with(var, atom);
                if *op == BinOp::And && a != Value::Bool(true) {
                    return Value::Bool(false);
                }
                if *op == BinOp::Or && a == Value::Bool(true) {
                    return Value::Bool(true);
                }
                let b = b.eval_with(var, atom);
                Value::Bool(match op {
                    BinOp::And | BinOp::Or => b == Value::Bool(true),
                    BinOp::Eq => a == b,
                    BinOp::Ne => a != b,
                    _ => match (a.as_int(), b.as_int()) {
                        (Some(x), Some(y)) => match op {
                            BinOp::Lt => x < y,
                            BinOp::Le => x <= y,
                            BinOp::Gt => x > y,
                            _ => x >= y,
                        },
                        _ => false,
                    },
                })
            }
        }
    }

    /// The constant this node is, if it is one.
    pub fn constant(&self) -> Option<&Value> {
        match self {
            Node::Lit(v) => Some(v),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------- expressions

/// One configuration value that may be an expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Expression {
    pub branches: Vec<Branch>,
    pub otherwise: Text,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Branch {
    pub cond: Text,
    pub then: Text,
}

/// An expression text with the source it came from (for `--print`).
#[derive(Clone, Debug, PartialEq)]
pub struct Text {
    pub source: serde_json::Value,
    pub node: Node,
}

impl Expression {
    /// An expression that always yields `v`.
    pub fn constant(v: Value) -> Self {
        let source = match &v {
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Bool(b) => serde_json::Value::from(*b),
            Value::Str(s) => serde_json::Value::from(format!("'{s}'")),
        };
        Expression {
            branches: vec![],
            otherwise: Text {
                source,
                node: Node::Lit(v),
            },
        }
    }

    pub fn string(s: &str) -> Self {
        Self::constant(Value::Str(s.to_string()))
    }

    pub fn eval(&self, vars: &Vars) -> Value {
        for b in &self.branches {
            if b.cond.node.eval(vars) == Value::Bool(true) {
                return b.then.node.eval(vars);
            }
        }
        self.otherwise.node.eval(vars)
    }

    /// The results this expression can produce, with the sub-path of each;
    /// `None` for a result that is not a constant.
    pub fn results(&self) -> Vec<(String, Option<&Value>)> {
        let mut out: Vec<(String, Option<&Value>)> = self
            .branches
            .iter()
            .enumerate()
            .map(|(i, b)| (format!(".match[{i}].then"), b.then.node.constant()))
            .collect();
        let else_path = if self.branches.is_empty() && !self.is_object_form() {
            String::new()
        } else {
            ".else".to_string()
        };
        out.push((else_path, self.otherwise.node.constant()));
        out
    }

    fn is_object_form(&self) -> bool {
        !self.branches.is_empty()
    }

    /// Type errors, as `(sub-path, message)`: conditions must be boolean,
    /// results of `want` type.
    pub fn type_errors(&self, allowed: &[Var], want: Type) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        for (i, b) in self.branches.iter().enumerate() {
            match b.cond.node.type_of(allowed) {
                Ok(Type::Bool) => {}
                Ok(t) => errs.push((
                    format!(".match[{i}].if"),
                    format!("a condition must be boolean, found {t}"),
                )),
                Err(e) => errs.push((format!(".match[{i}].if"), e)),
            }
        }
        let results = self
            .branches
            .iter()
            .enumerate()
            .map(|(i, b)| (format!(".match[{i}].then"), &b.then))
            .chain(std::iter::once((
                self.results().last().unwrap().0.clone(),
                &self.otherwise,
            )));
        for (path, text) in results {
            match text.node.type_of(allowed) {
                Ok(t) if t == want => {}
                Ok(t) => errs.push((path, format!("expected a {want} result, found {t}"))),
                Err(e) => errs.push((path, e)),
            }
        }
        errs
    }

    /// Warnings for `then` branches (and `else`) that can never be chosen.
    pub fn unreachable(&self) -> Vec<(String, String)> {
        reachability::check(self)
    }
}

mod reachability {
    //! Decides reachability by evaluating the conditions over every
    //! combination of representative variable values. Integer variables take
    //! each constant they are compared with, ±1, and 0; string variables take
    //! each constant they are compared with and one value equal to none;
    //! function calls are treated as free booleans. Free booleans can only add
    //! combinations that cannot really happen, so a warning is given only
    //! when a branch is unreachable for certain.
    use super::*;

    const MAX_COMBINATIONS: usize = 50_000;

    pub(super) fn check(e: &Expression) -> Vec<(String, String)> {
        let conds: Vec<&Node> = e.branches.iter().map(|b| &b.cond.node).collect();
        let Some(space) = Space::of(&conds) else {
            return vec![];
        };
        let mut ever_true = vec![false; conds.len()];
        let mut shadowed_always = vec![true; conds.len()];
        let mut shadow_by: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); conds.len()];
        let mut else_reached = false;
        space.for_each(|var, atom| {
            let mut first: Option<usize> = None;
            for (i, c) in conds.iter().enumerate() {
                if c.eval_with(var, atom) == Value::Bool(true) {
                    ever_true[i] = true;
                    match first {
                        None => {
                            first = Some(i);
                            shadowed_always[i] = false;
                        }
                        Some(f) => {
                            shadow_by[i].insert(f);
                        }
                    }
                }
            }
            if first.is_none() {
                else_reached = true;
            }
        });
        let mut out = Vec::new();
        for i in 0..conds.len() {
            if !ever_true[i] {
                out.push((
                    format!(".match[{i}].if"),
                    "this condition can never hold, so its `then` is never used".to_string(),
                ));
            } else if shadowed_always[i] {
                let earlier: Vec<String> =
                    shadow_by[i].iter().map(|j| format!("match[{j}]")).collect();
                out.push((
                    format!(".match[{i}].then"),
                    format!(
                        "can never be reached: an earlier `if` ({}) always holds when this one does; put the more specific condition first",
                        earlier.join(", ")
                    ),
                ));
            }
        }
        if !conds.is_empty() && !else_reached {
            out.push((
                ".else".to_string(),
                "can never be reached: some `if` always holds".to_string(),
            ));
        }
        out
    }

    struct Space<'a> {
        vars: Vec<(Var, Vec<Value>)>,
        atoms: Vec<&'a Node>,
    }

    impl<'a> Space<'a> {
        fn of(conds: &[&'a Node]) -> Option<Space<'a>> {
            let mut consts: BTreeMap<Var, BTreeSet<Value>> = BTreeMap::new();
            let mut atoms: Vec<&'a Node> = Vec::new();
            for c in conds {
                collect(c, &mut consts, &mut atoms);
            }
            let vars: Vec<(Var, Vec<Value>)> = consts
                .into_iter()
                .map(|(v, cs)| (v, representatives(v, cs)))
                .collect();
            let mut total: usize = 1usize.checked_shl(atoms.len() as u32)?;
            for (_, vals) in &vars {
                total = total.checked_mul(vals.len())?;
            }
            (total <= MAX_COMBINATIONS).then_some(Space { vars, atoms })
        }

        fn for_each(
            &self,
            mut f: impl FnMut(&dyn Fn(Var) -> Value, &dyn Fn(&Node) -> Option<bool>),
        ) {
            let mut idx = vec![0usize; self.vars.len()];
            loop {
                for bits in 0u64..(1u64 << self.atoms.len()) {
                    let var = |v: Var| {
                        self.vars
                            .iter()
                            .zip(&idx)
                            .find(|((name, _), _)| *name == v)
                            .map(|((_, vals), i)| vals[*i].clone())
                            .unwrap_or(Value::Int(0))
                    };
                    let atom = |n: &Node| {
                        self.atoms
                            .iter()
                            .position(|a| *a == n)
                            .map(|p| bits & (1 << p) != 0)
                    };
                    f(&var, &atom);
                }
                // Advance the mixed-radix counter over variable values.
                let mut k = 0;
                loop {
                    if k == idx.len() {
                        return;
                    }
                    idx[k] += 1;
                    if idx[k] < self.vars[k].1.len() {
                        break;
                    }
                    idx[k] = 0;
                    k += 1;
                }
            }
        }
    }

    fn representatives(v: Var, consts: BTreeSet<Value>) -> Vec<Value> {
        let mut out: BTreeSet<Value> = BTreeSet::new();
        if v.ty() == Type::Int {
            out.insert(Value::Int(0));
            for c in consts {
                if let Value::Int(n) = c {
                    for m in [n.saturating_sub(1), n, n.saturating_add(1)] {
                        if m >= 0 {
                            out.insert(Value::Int(m));
                        }
                    }
                }
            }
        } else {
            out.extend(consts);
            // A value that equals none of the constants.
            out.insert(Value::Str("\u{0}other".to_string()));
        }
        out.into_iter().collect()
    }

    fn collect<'a>(
        n: &'a Node,
        consts: &mut BTreeMap<Var, BTreeSet<Value>>,
        atoms: &mut Vec<&'a Node>,
    ) {
        match n {
            Node::Lit(_) => {}
            Node::Var(v) => {
                consts.entry(*v).or_default();
            }
            Node::Not(inner) => collect(inner, consts, atoms),
            Node::Call(..) => {
                if !atoms.contains(&n) {
                    atoms.push(n);
                }
            }
            Node::Bin(op, a, b) => match (a.as_ref(), b.as_ref()) {
                (Node::Var(v), Node::Lit(c)) | (Node::Lit(c), Node::Var(v))
                    if !matches!(op, BinOp::And | BinOp::Or) =>
                {
                    consts.entry(*v).or_default().insert(c.clone());
                }
                _ if !matches!(op, BinOp::And | BinOp::Or) && is_var_vs_var(a, b) => {
                    if !atoms.contains(&n) {
                        atoms.push(n);
                    }
                }
                _ => {
                    collect(a, consts, atoms);
                    collect(b, consts, atoms);
                }
            },
        }
    }

    fn is_var_vs_var(a: &Node, b: &Node) -> bool {
        !matches!((a, b), (Node::Lit(_), Node::Lit(_)))
    }
}

// ---------------------------------------------------------------- serde

impl Text {
    fn parse_json(source: serde_json::Value) -> Result<Text, String> {
        let node = match &source {
            serde_json::Value::Bool(b) => Node::Lit(Value::Bool(*b)),
            serde_json::Value::Number(n) => {
                Node::Lit(Value::Int(n.as_i64().ok_or_else(|| {
                    format!("{n} is not an integer the expression language knows")
                })?))
            }
            serde_json::Value::String(s) => parse(s).map_err(|e| e.to_string())?,
            _ => return Err("expected an expression: a string, number or boolean".into()),
        };
        Ok(Text { source, node })
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Text::parse_json(v).map_err(de::Error::custom)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchForm {
    #[serde(rename = "match", default)]
    branches: Vec<BranchForm>,
    #[serde(rename = "else")]
    otherwise: Option<Text>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BranchForm {
    #[serde(rename = "if")]
    cond: Text,
    then: Text,
}

impl<'de> Deserialize<'de> for Expression {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Expression;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "an expression: a string, number, boolean or {\"match\": [...], \"else\": ...}",
                )
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Expression, E> {
                Ok(Expression::constant(Value::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Expression, E> {
                Ok(Expression::constant(Value::Int(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Expression, E> {
                let v = i64::try_from(v).map_err(|_| E::custom("integer too large"))?;
                Ok(Expression::constant(Value::Int(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Expression, E> {
                let otherwise = Text::parse_json(serde_json::Value::from(v)).map_err(E::custom)?;
                Ok(Expression {
                    branches: vec![],
                    otherwise,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Expression, A::Error> {
                let form = MatchForm::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let otherwise = form.otherwise.ok_or_else(|| {
                    de::Error::custom(
                        "an expression object needs an \"else\" (the value when no \"if\" holds)",
                    )
                })?;
                Ok(Expression {
                    branches: form
                        .branches
                        .into_iter()
                        .map(|b| Branch {
                            cond: b.cond,
                            then: b.then,
                        })
                        .collect(),
                    otherwise,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Expression {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.branches.is_empty() {
            return self.otherwise.source.serialize(s);
        }
        let branches: Vec<serde_json::Value> = self
            .branches
            .iter()
            .map(|b| serde_json::json!({"if": b.cond.source, "then": b.then.source}))
            .collect();
        serde_json::json!({"match": branches, "else": self.otherwise.source}).serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vars(retry: i64, last_error: &str, mx: &str) -> Vars {
        Vars {
            retry_num: retry,
            last_error: last_error.into(),
            mx: mx.into(),
            ..Default::default()
        }
    }

    fn expr(json: &str) -> Expression {
        serde_json::from_str(json).unwrap()
    }

    /// Found by fuzzing: deep nesting overflowed the stack of the thread
    /// that parsed (and evaluated) the expression.
    #[test]
    fn nesting_and_length_are_bounded() {
        let deep = |n: usize| format!("{}retry_num > 1{}", "(".repeat(n), ")".repeat(n));
        assert!(parse(&deep(MAX_NESTING)).is_ok());
        let e = parse(&deep(MAX_NESTING + 1)).unwrap_err();
        assert!(e.message.contains("nested too deeply"), "{e}");
        assert!(parse(&deep(100_000)).is_err());
        assert!(parse(&format!("{}true", "!".repeat(MAX_NESTING))).is_ok());
        assert!(parse(&format!("{}true", "!".repeat(100_000))).is_err());
        let calls = format!("{}'a', 'b'{}", "contains(".repeat(40), ")".repeat(40));
        assert!(parse(&calls).is_err());
        // a long flat chain is bounded by its length
        let chain = |n: usize| vec!["retry_num > 1"; n].join(" || ");
        assert!(parse(&chain(200)).is_ok());
        let e = parse(&chain(100_000)).unwrap_err();
        assert!(e.message.contains("too long"), "{e}");
    }

    #[test]
    fn the_three_spellings_of_a_constant_agree() {
        for j in [r#""'default'""#, r#"{"else": "'default'"}"#, r#""default""#] {
            assert_eq!(
                expr(j).eval(&Vars::default()),
                Value::Str("default".into()),
                "{j}"
            );
        }
    }

    #[test]
    fn the_spec_fallback_chain_evaluates_in_order() {
        let e = expr(
            r#"{ "match": [ { "if": "retry_num > 1 && last_error == 'tls'", "then": "'disable-tls'" },
                            { "if": "retry_num > 0 && last_error == 'tls'", "then": "'invalid-tls'" } ],
                 "else": "'default'" }"#,
        );
        let s = |r, l| e.eval(&vars(r, l, "mx")).to_string();
        assert_eq!(s(0, "none"), "default");
        assert_eq!(s(1, "tls"), "invalid-tls");
        assert_eq!(s(2, "tls"), "disable-tls");
        assert_eq!(s(2, "dns"), "default");
        assert!(e.unreachable().is_empty(), "{:?}", e.unreachable());
    }

    #[test]
    fn the_seed_order_is_reported_unreachable() {
        let e = expr(
            r#"{ "match": [ { "if": "retry_num > 0 && last_error == 'tls'", "then": "'invalid-tls'" },
                            { "if": "retry_num > 1 && last_error == 'tls'", "then": "'disable-tls'" } ],
                 "else": "'default'" }"#,
        );
        let w = e.unreachable();
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].0, ".match[1].then");
        assert!(w[0].1.contains("match[0]"));
    }

    #[test]
    fn functions_and_negation() {
        let e = expr(r#""ends_with(mx, '.example.org') && !starts_with(mx, 'backup')""#);
        assert_eq!(
            e.eval(&vars(0, "none", "mx1.example.org")),
            Value::Bool(true)
        );
        assert_eq!(
            e.eval(&vars(0, "none", "backup.example.org")),
            Value::Bool(false)
        );
        let c = expr(r#""contains(rcpt_domain, 'corp')""#);
        let mut v = Vars::default();
        v.rcpt_domain = "mail.corp.example".into();
        assert_eq!(c.eval(&v), Value::Bool(true));
    }

    #[test]
    fn syntax_errors_carry_the_column() {
        let cases = [
            ("retry_num > ", 13),
            ("retry_num = 1", 11),
            ("(retry_num > 1", 15),
            ("mx == \"a\"", 7),
            ("foo(mx, 'a')", 1),
            ("retry_num > 1 retry_num", 15),
            ("'open", 1),
            ("1 < 2 < 3", 7),
        ];
        for (text, col) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.column, col, "{text}: {e}");
        }
    }

    #[test]
    fn type_errors_are_found() {
        let e = expr(
            r#"{"match": [{"if": "retry_num == 'x'", "then": "'a'"}, {"if": "mx", "then": "1"}], "else": "'b'"}"#,
        );
        let errs = e.type_errors(&Var::ALL, Type::Str);
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, [".match[0].if", ".match[1].if", ".match[1].then"]);
    }

    #[test]
    fn bare_words_are_constants() {
        assert_eq!(
            expr(r#""disable-tls""#).eval(&Vars::default()),
            Value::Str("disable-tls".into())
        );
        assert_eq!(
            expr(r#""daily""#).eval(&Vars::default()),
            Value::Str("daily".into())
        );
        assert_eq!(
            expr(r#""26214400""#).eval(&Vars::default()),
            Value::Int(26214400)
        );
    }

    #[test]
    fn a_never_true_condition_and_an_unreachable_else() {
        let e = expr(r#"{"match": [{"if": "retry_num < 0", "then": "'a'"}], "else": "'b'"}"#);
        assert_eq!(e.unreachable()[0].0, ".match[0].if");
        let e = expr(r#"{"match": [{"if": "retry_num >= 0", "then": "'a'"}], "else": "'b'"}"#);
        assert_eq!(e.unreachable()[0].0, ".else");
    }

    #[test]
    fn mx_specific_branches_are_not_flagged() {
        let e = expr(
            r#"{ "match": [ { "if": "mx == 'highly-secure.host.org'", "then": "'high-security'" },
                            { "if": "ends_with(mx, '.host.org')", "then": "'default'" } ],
                 "else": "'default'" }"#,
        );
        assert!(e.unreachable().is_empty(), "{:?}", e.unreachable());
    }

    // Printing a parsed node back and parsing again gives the same tree.
    fn print(n: &Node) -> String {
        match n {
            Node::Lit(Value::Str(s)) => {
                format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
            }
            Node::Lit(v) => v.to_string(),
            Node::Var(v) => v.name().to_string(),
            Node::Not(i) => format!("!({})", print(i)),
            Node::Bin(op, a, b) => format!("({} {} {})", print(a), op.symbol(), print(b)),
            Node::Call(f, a, b) => format!("{}({}, {})", f.name(), print(a), print(b)),
        }
    }

    fn arb_node() -> impl Strategy<Value = Node> {
        let leaf = prop_oneof![
            any::<i32>().prop_map(|i| Node::Lit(Value::Int(i.unsigned_abs() as i64))),
            "[a-z' \\\\]{0,6}".prop_map(|s| Node::Lit(Value::Str(s))),
            any::<bool>().prop_map(|b| Node::Lit(Value::Bool(b))),
            proptest::sample::select(Var::ALL.to_vec()).prop_map(Node::Var),
        ];
        leaf.prop_recursive(4, 32, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|n| Node::Not(Box::new(n))),
                (
                    proptest::sample::select(vec![
                        BinOp::Eq,
                        BinOp::Ne,
                        BinOp::Lt,
                        BinOp::Le,
                        BinOp::Gt,
                        BinOp::Ge,
                        BinOp::And,
                        BinOp::Or
                    ]),
                    inner.clone(),
                    inner.clone()
                )
                    .prop_map(|(op, a, b)| Node::Bin(op, Box::new(a), Box::new(b))),
                (
                    proptest::sample::select(vec![
                        Func::StartsWith,
                        Func::EndsWith,
                        Func::Contains
                    ]),
                    inner.clone(),
                    inner
                )
                    .prop_map(|(f, a, b)| Node::Call(f, Box::new(a), Box::new(b))),
            ]
        })
    }

    proptest! {
        #[test]
        fn print_then_parse_round_trips(n in arb_node()) {
            let text = print(&n);
            prop_assert_eq!(parse(&text).unwrap(), n, "{}", text);
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(s in "\\PC{0,40}") {
            let _ = parse(&s);
        }
    }
}
