//! POSIX shell quoting for the commands kforge builds to run on hosts (the bootstrap's SSH steps and the asset
//! manifests' install scripts).

/// Quotes a string for a POSIX shell: one single-quoted word, whatever it holds.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_quoted_word_stays_one_word() {
        assert_eq!(super::shell_quote("a b"), "'a b'");
        assert_eq!(super::shell_quote("it's"), r"'it'\''s'");
    }
}
