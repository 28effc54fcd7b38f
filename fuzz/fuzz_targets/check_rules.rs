//! Generates rule text from the language's grammar over the rule library's
//! event types (`rules/events.vgl`), so that nearly every input parses and the
//! checker and the compiler see it: they must return a program or
//! diagnostics with at least one error, never panic, overflow the stack or
//! hang; a compiled program dumps and serialises.
//!
//! The generated rules use real and wrong field names, types, bindings,
//! quantifiers, negations, alternations, aggregates and clauses, so both the
//! accepting and the rejecting paths of the checker are reached.
//!
//! ```sh
//! RUSTC_BOOTSTRAP=1 cargo fuzz run -s none check_rules fuzz/corpus/check_rules
//! ```
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

const SCHEMA: &str = include_str!("../../rules/events.vgl");

/// Event types of the library, with some of their fields (and one that does
/// not exist).
const TYPES: &[(&str, &[&str])] = &[
    (
        "Txn",
        &[
            "card_id", "amount", "mcc", "country", "status", "merchant", "lat", "lon", "ts", "id",
        ],
    ),
    (
        "Login",
        &["account_id", "ok", "country", "device_id", "ip", "lat"],
    ),
    ("Refund", &["card_id", "amount", "merchant", "reason"]),
    ("Nope", &["x"]),
];
const BINDINGS: &[&str] = &["a", "b", "c", "x", "big", "probes"];
const KEYS: &[&str] = &["card_id", "account_id", "country", "amount", "nope"];
const DURATIONS: &[&str] = &["0ms", "1ms", "250ms", "30s", "10m", "2h", "1d", "1000d"];
const AGGS: &[&str] = &["count", "sum", "avg", "min", "max", "distinct_count"];
const FUNCS: &[(&str, usize)] = &[
    ("abs", 1),
    ("lower", 1),
    ("upper", 1),
    ("len", 1),
    ("contains", 2),
    ("starts_with", 2),
    ("hour", 1),
    ("geo_km", 4),
    ("nope", 1),
];
const OPS: &[&str] = &[
    "+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "and", "or", "=~",
];

struct Gen<'a, 'b> {
    u: &'b mut Unstructured<'a>,
    out: String,
}

impl Gen<'_, '_> {
    fn pick<T: Copy>(&mut self, xs: &[T]) -> Result<T> {
        Ok(*self.u.choose(xs)?)
    }

    fn push(&mut self, s: &str) {
        self.out.push_str(s);
    }

    fn literal(&mut self) -> Result<()> {
        let s = match self.u.int_in_range(0..=8)? {
            0 => format!("{}", self.u.int_in_range(-3i64..=1_000_000)?),
            1 => format!("{}.5", self.u.int_in_range(0i64..=2_000)?),
            2 => format!(
                "{:?}",
                self.pick(&["ecom", "approved", "", "DE", "a\\\"b"])?
            ),
            3 => self.pick(&["true", "false"])?.to_string(),
            4 => self.pick(DURATIONS)?.to_string(),
            5 => self
                .pick(&["9223372036854775807", "1e308", "0.0", "-0"])?
                .to_string(),
            6 => format!("\"{}\"", self.pick(&["^a.*$", "[", "(a|b)+", "\\\\d{3}"])?),
            _ => format!("{}", self.u.int_in_range(0i64..=24)?),
        };
        self.push(&s);
        Ok(())
    }

    fn field_ref(&mut self, fields: &[&str]) -> Result<()> {
        let s = match self.u.int_in_range(0..=3)? {
            0 => self.pick(fields)?.to_string(),
            1 => format!("{}.{}", self.pick(BINDINGS)?, self.pick(fields)?),
            2 => format!(
                "{}({}).{}",
                self.pick(&["first", "last"])?,
                self.pick(BINDINGS)?,
                self.pick(fields)?
            ),
            _ => {
                let agg = self.pick(AGGS)?;
                if agg == "count" {
                    format!("count({})", self.pick(BINDINGS)?)
                } else {
                    format!("{agg}({}.{})", self.pick(BINDINGS)?, self.pick(fields)?)
                }
            }
        };
        self.push(&s);
        Ok(())
    }

    fn expr(&mut self, fields: &[&str], depth: u32) -> Result<()> {
        let leaf = depth == 0 || self.u.is_empty();
        match if leaf {
            self.u.int_in_range(0..=1)?
        } else {
            self.u.int_in_range(0..=7)?
        } {
            0 => self.literal(),
            1 => self.field_ref(fields),
            2 | 3 => {
                self.expr(fields, depth - 1)?;
                let op = self.pick(OPS)?;
                self.push(&format!(" {op} "));
                self.expr(fields, depth - 1)
            }
            4 => {
                let op = self.pick(&["not ", "-"])?;
                self.push(op);
                self.expr(fields, depth - 1)
            }
            5 => {
                self.push("(");
                self.expr(fields, depth - 1)?;
                self.push(")");
                Ok(())
            }
            6 => {
                let (name, arity) = self.pick(FUNCS)?;
                self.push(name);
                self.push("(");
                for i in 0..arity {
                    if i > 0 {
                        self.push(", ");
                    }
                    self.expr(fields, depth - 1)?;
                }
                self.push(")");
                Ok(())
            }
            _ => {
                self.expr(fields, depth - 1)?;
                if self.u.arbitrary()? {
                    self.push(" in list \"blocked\"");
                } else {
                    self.push(" in [");
                    for i in 0..self.u.int_in_range(0..=3)? {
                        if i > 0 {
                            self.push(", ");
                        }
                        self.literal()?;
                    }
                    self.push("]");
                }
                Ok(())
            }
        }
    }

    fn quant(&mut self) -> Result<()> {
        let s = match self.u.int_in_range(0..=7)? {
            0 | 1 => String::new(),
            2 => "?".into(),
            3 => "+".into(),
            4 => format!("{{{}}}", self.u.int_in_range(0..=4)?),
            5 => format!("{{{},}}", self.u.int_in_range(0..=4)?),
            6 => format!(
                "{{{},{}}}",
                self.u.int_in_range(0..=3)?,
                self.u.int_in_range(0..=5)?
            ),
            _ => "{1,1}".into(),
        };
        self.push(&s);
        Ok(())
    }

    fn atom(&mut self, depth: u32) -> Result<()> {
        if depth > 0 && self.u.ratio(1, 5)? {
            self.push("(");
            let n = self.u.int_in_range(1..=3)?;
            for i in 0..n {
                if i > 0 {
                    self.push(" | ");
                }
                self.seq(depth - 1)?;
            }
            self.push(")");
            return Ok(());
        }
        if self.u.ratio(4, 5)? {
            let b = self.pick(BINDINGS)?;
            self.push(&format!("{b}: "));
        }
        let (ty, fields) = self.pick(TYPES)?;
        self.push(ty);
        if self.u.ratio(2, 3)? {
            self.push("[");
            self.expr(fields, 3)?;
            self.push("]");
        }
        Ok(())
    }

    fn step(&mut self, depth: u32) -> Result<()> {
        if self.u.ratio(1, 6)? {
            self.push("not ");
            self.atom(depth)
        } else {
            self.atom(depth)?;
            self.quant()
        }
    }

    fn seq(&mut self, depth: u32) -> Result<()> {
        let n = self.u.int_in_range(1..=4)?;
        for i in 0..n {
            if i > 0 {
                let arrow = self.pick(&[" -> ", " ->> "])?;
                self.push(arrow);
            }
            self.step(depth)?;
        }
        Ok(())
    }

    fn rule(&mut self) -> Result<()> {
        let n = self.u.int_in_range(0..=2)?;
        self.push(&format!("rule r{n} {{\n"));
        let (_, fields) = self.pick(TYPES)?;
        let mut clauses: Vec<u8> = (0..9).collect();
        // Clauses come in any order; some are left out.
        for i in (1..clauses.len()).rev() {
            let j = self.u.int_in_range(0..=i)?;
            clauses.swap(i, j);
        }
        let aggregate = self.u.ratio(1, 4)?;
        for c in clauses {
            if self.u.ratio(1, 6)? {
                continue;
            }
            match c {
                0 => {
                    let s = self.pick(&["low", "medium", "high", "critical", "huge"])?;
                    self.push(&format!("  severity {s}\n"));
                }
                1 => {
                    let k = self.pick(KEYS)?;
                    self.push(&format!("  key {k}\n"));
                }
                2 if aggregate => {
                    let b = self.pick(BINDINGS)?;
                    let (ty, f) = self.pick(TYPES)?;
                    self.push(&format!("  aggregate {b}: {ty}["));
                    self.expr(f, 2)?;
                    let d = self.pick(DURATIONS)?;
                    self.push(&format!("] over {d}\n"));
                }
                2 => {
                    self.push("  pattern ");
                    self.seq(2)?;
                    self.push("\n");
                }
                3 if aggregate => {
                    self.push("  having ");
                    self.expr(fields, 3)?;
                    self.push("\n");
                }
                3 => {
                    let d = self.pick(DURATIONS)?;
                    self.push(&format!("  within {d}\n"));
                }
                4 => {
                    self.push("  where ");
                    self.expr(fields, 3)?;
                    self.push("\n");
                }
                5 => {
                    self.push("  emit {");
                    for i in 0..self.u.int_in_range(0..=3)? {
                        if i > 0 {
                            self.push(",");
                        }
                        self.push(&format!(" f{i}: "));
                        self.expr(fields, 2)?;
                    }
                    self.push(" }\n");
                }
                6 => {
                    let d = self.pick(DURATIONS)?;
                    self.push(&format!("  suppress {d}\n"));
                }
                7 => {
                    let s = self.pick(&["skip past last", "skip to next", "no skip"])?;
                    self.push(&format!("  after match {s}\n"));
                }
                _ => self.push("  tags [\"t\"]\n  description \"d\"\n"),
            }
        }
        self.push("}\n");
        Ok(())
    }
}

fuzz_target!(|bytes: &[u8]| {
    let mut u = Unstructured::new(bytes);
    let mut g = Gen {
        u: &mut u,
        out: String::new(),
    };
    let rules = g.u.int_in_range(1..=2).unwrap_or(1);
    for _ in 0..rules {
        if g.rule().is_err() {
            break;
        }
    }
    let text = g.out;
    let mut sources = rule_lang::Sources::new();
    sources.add("events.vgl", SCHEMA);
    sources.add("fuzz.vgl", &text);
    let compiled = rule_lang::compile_sources(sources);
    match compiled.program {
        Some(set) => {
            for rule in &set.rules {
                let _ = set.dump_rule(rule);
            }
            let json = serde_json::to_string(&set).expect("a program serialises");
            let back: rule_lang::RuleSet = serde_json::from_str(&json).expect("and reads back");
            assert_eq!(back.rules.len(), set.rules.len());
            // It runs: the engine accepts the program.
            let _ = cep_engine::Decoder::new(&set);
        }
        None => {
            assert!(
                compiled.diagnostics.has_errors(),
                "no program and no error:\n{text}"
            );
            let _ = compiled.diagnostics.render(false);
        }
    }
});
