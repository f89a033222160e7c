//! How kforge words an error with its causes: the one cause-chain printer the CLI, the AWS layer, the registry
//! client and the bootstrap's API client share.

use std::error::Error;

/// The texts of `e` and of its causes, outermost first, each said once: a text already contained in an earlier
/// one is left out (hyper, rustls and the AWS SDK repeat their causes' texts inside their own).
pub fn texts(e: &dyn Error) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let t = err.to_string();
        if !t.is_empty() && !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = err.source();
    }
    parts
}

/// `e` and its causes on one line, `: `-joined.
pub fn chain(e: &dyn Error) -> String {
    texts(e).join(": ")
}

/// Only the causes of `e` (what its own text does not say), `: `-joined; empty without any.
pub fn causes(e: &dyn Error) -> String {
    e.source().map(chain).unwrap_or_default()
}

/// `e` for a person at a terminal: the outermost text, then each cause on its own `caused by:` line.
pub fn render(e: &dyn Error) -> String {
    texts(e).join("\n  caused by: ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn Error + 'static))
        }
    }

    #[test]
    fn each_text_is_said_once_outermost_first() {
        let e = Layer(
            "dispatch failure: io error: connection refused",
            Some(Box::new(Layer(
                "io error: connection refused",
                Some(Box::new(Layer(
                    "connection refused",
                    Some(Box::new(Layer("os error 111", None))),
                ))),
            ))),
        );
        assert_eq!(
            chain(&e),
            "dispatch failure: io error: connection refused: os error 111"
        );
        assert_eq!(causes(&e), "io error: connection refused: os error 111");
        assert_eq!(
            render(&e),
            "dispatch failure: io error: connection refused\n  caused by: os error 111"
        );
        assert_eq!(causes(&Layer("alone", None)), "");
    }
}
