//! Hostile and mangled specs, generated: deep nesting of every kind, alias bombs, multiple documents, oversized
//! text, and a few hundred byte-level mutations of the examples. Every case must end in a value or an error that
//! carries a position (or a field path, or names the size limit), without a panic, in bounded time.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{SpecLoadError, parse};
use crate::model::{Cluster, Context};

/// xorshift64*: deterministic, so a failing case is reproducible from its number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn examples() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    [
        "eks-minimal.yaml",
        "selfbuilt-ha.yaml",
        "hosts.yaml",
        "eks-gpu-spot.yaml",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(dir.join(f)).unwrap())
    .collect()
}

fn cases() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for n in [100, 5_000, 100_000] {
        out.push((format!("{n} nested flow sequences"), "[".repeat(n) + &"]".repeat(n)));
        out.push((format!("{n} nested flow maps"), "{a: ".repeat(n) + "1" + &"}".repeat(n)));
    }
    for n in [100, 5_000, 20_000] {
        let block: String = (0..n).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect();
        out.push((format!("{n} nested block maps"), block));
        out.push((
            format!("{n} nested block sequences on one line"),
            "- ".repeat(n) + "x\n",
        ));
    }
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let prev = if i == 1 { "a".to_string() } else { format!("a{}", i - 1) };
        bomb += &format!("a{i}: &a{i} [{}]\n", vec![format!("*{prev}"); 10].join(", "));
    }
    out.push(("alias bomb".into(), bomb));
    let spec = &examples()[0];
    out.push(("two documents".into(), format!("{spec}---\n{spec}")));
    out.push(("oversized".into(), format!("{spec}# {}\n", "x".repeat(1024 * 1024))));
    out.push(("long string".into(), spec.replace("eks-minimal", &"n".repeat(200_000))));
    out.push((
        "null where a string goes".into(),
        spec.replace("name: eks-minimal", "name: null"),
    ));
    out.push(("empty".into(), String::new()));
    let mut rng = Rng(0x6b66_6f72_6765);
    let specials = [
        ":", "-", "[", "]", "{", "}", "'", "\"", "&", "*", "!", "\n", "\t", "#", "|", ">", " ", "%", "@", "`", "\u{0}",
    ];
    for i in 0..300 {
        let base = examples()[i % 4].clone();
        let mut bytes: Vec<char> = base.chars().collect();
        for _ in 0..1 + rng.below(6) {
            let at = rng.below(bytes.len() + 1).min(bytes.len());
            match rng.below(4) {
                0 => {
                    if at < bytes.len() {
                        bytes.remove(at);
                    }
                }
                1 => {
                    for (k, c) in specials[rng.below(specials.len())].chars().enumerate() {
                        bytes.insert(at + k, c);
                    }
                }
                2 => bytes.truncate(at),
                _ => {
                    if at < bytes.len() {
                        bytes[at] = char::from_u32(rng.below(0x250) as u32).unwrap_or('?');
                    }
                }
            }
        }
        out.push((format!("mutation {i}"), bytes.into_iter().collect()));
    }
    out
}

/// A location `fuzz.yaml:LINE:COL`.
fn has_position(location: &str) -> bool {
    let mut parts = location.rsplitn(3, ':');
    let col = parts.next().and_then(|c| c.parse::<usize>().ok());
    let line = parts.next().and_then(|l| l.parse::<usize>().ok());
    col.is_some() && line.is_some()
}

#[test]
fn hostile_specs_end_in_a_positioned_error_quickly_and_never_panic() {
    let ctx = Context {
        fallback_region: Some("us-east-1".into()),
        base_dir: PathBuf::from("."),
        origin: "fuzz.yaml".into(),
    };
    let mut slowest = (Duration::ZERO, String::new());
    for (name, text) in cases() {
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(|| match parse(&text, "fuzz.yaml") {
            Ok(spec) => match Cluster::from_spec(&spec, &ctx) {
                Ok(_) => Ok(()),
                Err(e) => {
                    for f in &e.errors {
                        assert!(
                            f.path.starts_with("spec")
                                || f.path.starts_with("metadata")
                                || f.path.starts_with("apiVersion")
                                || f.path.starts_with("kind"),
                            "{name}: no field path: {f:?}"
                        );
                    }
                    Err(e.to_string())
                }
            },
            Err(SpecLoadError::Parse { location, message, .. }) => {
                assert!(
                    has_position(&location) || message.contains("larger than") || message.contains(": null where"),
                    "{name}: an error without a position: {location}: {message}"
                );
                Err(message)
            }
            Err(e) => panic!("{name}: {e}"),
        });
        let took = started.elapsed();
        assert!(outcome.is_ok(), "{name}: panicked");
        if took > slowest.0 {
            slowest = (took, name.clone());
        }
        // Bounded: the worst of these finished in milliseconds when the bounds were added (minutes before).
        assert!(took < Duration::from_secs(2), "{name} took {took:?}");
    }
    eprintln!("slowest case: {} ({:?})", slowest.1, slowest.0);
}
