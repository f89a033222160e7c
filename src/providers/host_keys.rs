//! SSH host keys of new EC2 instances, read from their console output: cloud-init prints the keys' fingerprints (and
//! the public keys) between `-----BEGIN SSH HOST KEY ...-----` markers, which is how a host key can be known before
//! the first connection instead of trusted on first use.
//!
//! The console is not a clean channel: lines carry prefixes (`ec2: ` on Ubuntu, `<14>DATE cloud-init: ` on Amazon
//! Linux), kernel messages interleave, and `GetConsoleOutput` answers base64 on AWS (raw text on emulators). The
//! parser takes what is inside the markers and ignores everything else.

use std::fmt;

use base64::Engine as _;

/// One fingerprint line: `256 SHA256:abc... comment (ED25519)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// `ED25519`, `ECDSA`, `RSA`.
    pub key_type: String,
    pub bits: u32,
    /// `SHA256:` followed by unpadded base64, as `ssh-keygen -l` prints it.
    pub sha256: String,
}

/// One public key line: `ssh-ed25519 AAAA...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub algorithm: String,
    pub base64: String,
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.algorithm, self.base64)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostKeys {
    pub fingerprints: Vec<Fingerprint>,
    pub keys: Vec<PublicKey>,
}

impl HostKeys {
    pub fn is_empty(&self) -> bool {
        self.fingerprints.is_empty() && self.keys.is_empty()
    }

    /// The fingerprint of the host key of `key_type` (`ED25519`), if the console showed one.
    pub fn fingerprint(&self, key_type: &str) -> Option<&Fingerprint> {
        self.fingerprints
            .iter()
            .find(|f| f.key_type.eq_ignore_ascii_case(key_type))
    }
}

/// The console text: base64-decoded when it is base64 (AWS), as is otherwise (emulators).
pub fn console_text(output: &str) -> String {
    let compact: String = output.split_whitespace().collect();
    if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&compact) {
        // Consoles carry stray non-UTF-8 bytes (boot loaders); keep what is readable.
        let text = String::from_utf8_lossy(&bytes);
        if text.contains("-----BEGIN SSH HOST KEY") {
            return text.into_owned();
        }
    }
    output.to_string()
}

const FP_BEGIN: &str = "-----BEGIN SSH HOST KEY FINGERPRINTS-----";
const FP_END: &str = "-----END SSH HOST KEY FINGERPRINTS-----";
const KEYS_BEGIN: &str = "-----BEGIN SSH HOST KEY KEYS-----";
const KEYS_END: &str = "-----END SSH HOST KEY KEYS-----";

/// Lines strictly between `begin` and `end` markers, from the *last* such block (a reboot prints it again; the
/// latest is current). Whatever precedes a marker on its line is the block's prefix and is cut from its lines.
fn last_block<'a>(text: &'a str, begin: &str, end: &str) -> Vec<&'a str> {
    let mut block: Option<Vec<&str>> = None;
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.contains(begin) {
            current = Some(Vec::new());
        } else if line.contains(end) {
            if let Some(done) = current.take() {
                block = Some(done);
            }
        } else if let Some(lines) = current.as_mut() {
            lines.push(line);
        }
    }
    block.unwrap_or_default()
}

fn parse_fingerprint(line: &str) -> Option<Fingerprint> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let at = tokens.iter().position(|t| t.starts_with("SHA256:"))?;
    let bits = tokens.get(at.checked_sub(1)?)?.parse().ok()?;
    let key_type = tokens
        .last()?
        .strip_prefix('(')?
        .strip_suffix(')')?
        .to_ascii_uppercase();
    let sha = tokens[at];
    let digest = sha.strip_prefix("SHA256:")?;
    let valid = digest.len() == 43
        && digest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/');
    valid.then(|| Fingerprint {
        key_type,
        bits,
        sha256: sha.to_string(),
    })
}

fn parse_key(line: &str) -> Option<PublicKey> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let at = tokens
        .iter()
        .position(|t| t.starts_with("ssh-") || t.starts_with("ecdsa-sha2-") || t.starts_with("sk-"))?;
    let b64 = tokens.get(at + 1)?;
    base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some(PublicKey {
        algorithm: tokens[at].to_string(),
        base64: b64.to_string(),
    })
}

/// The host keys a console output shows; empty when cloud-init has not printed them (yet).
pub fn parse_console(output: &str) -> HostKeys {
    let text = console_text(output);
    HostKeys {
        fingerprints: last_block(&text, FP_BEGIN, FP_END)
            .into_iter()
            .filter_map(parse_fingerprint)
            .collect(),
        keys: last_block(&text, KEYS_BEGIN, KEYS_END)
            .into_iter()
            .filter_map(parse_key)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Amazon Linux 2023 (cloud-init 22.2): syslog-style prefixes on the fingerprint block, bare key lines.
    const AL2023: &str = "\
[    5.912345] cloud-init[1580]: Cloud-init v. 22.2.2 running 'modules:final' at Mon, 23 Nov 2026 17:00:01 +0000.
<14>Nov 23 17:00:01 cloud-init: #############################################################
<14>Nov 23 17:00:01 cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----
<14>Nov 23 17:00:01 cloud-init: 256 SHA256:m3Bq7oV0y6PZ1LkQ8m0S1cUuH3yT0wL8pQ2gR4nD5eA no comment (ECDSA)
<14>Nov 23 17:00:01 cloud-init: 256 SHA256:Xk2vL9pQ8sT1uY3wR5zA7bC9dE1fG3hJ5kL7mN9pQ2s no comment (ED25519)
<14>Nov 23 17:00:01 cloud-init: -----END SSH HOST KEY FINGERPRINTS-----
<14>Nov 23 17:00:01 cloud-init: #############################################################
-----BEGIN SSH HOST KEY KEYS-----
ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHc=
ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk2dEeIYtHvzzXUFw1Vx0Wn9sZs8Mn9rPzRbMB2hC1b
-----END SSH HOST KEY KEYS-----
[    6.123456] cloud-init[1580]: Cloud-init v. 22.2.2 finished at Mon, 23 Nov 2026 17:00:02 +0000.
";

    /// Ubuntu 24.04: `ec2: ` prefixes, an RSA key too, kernel lines interleaved.
    const UBUNTU: &str = "\
[   12.000000] systemd[1]: Starting cloud-final.service...
ec2: 
ec2: #############################################################
ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----
ec2: 256 SHA256:AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefg root@ip-10-0-1-5 (ECDSA)
[   12.345678] random: crng init done
ec2: 256 SHA256:hIjKlMnOpQrStUvWxYz0123456789abcdefgAbCdEfG root@ip-10-0-1-5 (ED25519)
ec2: 3072 SHA256:0123456789abcdefgAbCdEfGhIjKlMnOpQrStUvWxYz root@ip-10-0-1-5 (RSA)
ec2: -----END SSH HOST KEY FINGERPRINTS-----
ec2: #############################################################
-----BEGIN SSH HOST KEY KEYS-----
ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHc= root@ip-10-0-1-5
ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk2dEeIYtHvzzXUFw1Vx0Wn9sZs8Mn9rPzRbMB2hC1b root@ip-10-0-1-5
ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQC7 root@ip-10-0-1-5
-----END SSH HOST KEY KEYS-----
";

    #[test]
    fn amazon_linux_console_gives_both_fingerprints_and_keys() {
        let k = parse_console(AL2023);
        assert_eq!(k.fingerprints.len(), 2);
        let ed = k.fingerprint("ed25519").unwrap();
        assert_eq!(ed.bits, 256);
        assert_eq!(ed.sha256, "SHA256:Xk2vL9pQ8sT1uY3wR5zA7bC9dE1fG3hJ5kL7mN9pQ2s");
        assert_eq!(k.keys.len(), 2);
        assert_eq!(k.keys[1].algorithm, "ssh-ed25519");
        assert!(k.keys[1].to_string().starts_with("ssh-ed25519 AAAAC3"));
    }

    #[test]
    fn ubuntu_console_with_prefixes_and_interleaved_kernel_lines() {
        let k = parse_console(UBUNTU);
        let types: Vec<&str> = k.fingerprints.iter().map(|f| f.key_type.as_str()).collect();
        assert_eq!(types, ["ECDSA", "ED25519", "RSA"]);
        assert_eq!(k.fingerprint("RSA").unwrap().bits, 3072);
        assert_eq!(k.keys.len(), 3);
    }

    #[test]
    fn aws_base64_output_is_decoded() {
        let encoded = base64::engine::general_purpose::STANDARD.encode(UBUNTU);
        // AWS wraps nothing, but tolerate line-wrapped base64 too.
        let wrapped: String = encoded
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(parse_console(&wrapped), parse_console(UBUNTU));
    }

    #[test]
    fn before_cloud_init_there_is_nothing_and_the_last_block_wins() {
        assert!(parse_console("[    0.000000] Linux version 6.1\n").is_empty());
        assert!(parse_console("").is_empty());
        // Cut off mid-block (the console is still being written): nothing is trusted.
        let partial = &UBUNTU[..UBUNTU.find("ec2: -----END").unwrap()];
        assert!(parse_console(partial).fingerprints.is_empty());
        // After a reboot with regenerated keys, the later block is the truth.
        let rebooted = format!(
            "{UBUNTU}{}",
            UBUNTU.replace(
                "SHA256:hIjKlMnOpQrStUvWxYz0123456789abcdefgAbCdEfG",
                "SHA256:zzzKlMnOpQrStUvWxYz0123456789abcdefgAbCdEfG"
            )
        );
        assert_eq!(
            parse_console(&rebooted).fingerprint("ED25519").unwrap().sha256,
            "SHA256:zzzKlMnOpQrStUvWxYz0123456789abcdefgAbCdEfG"
        );
    }

    #[test]
    fn malformed_lines_are_skipped_not_guessed() {
        let text = "-----BEGIN SSH HOST KEY FINGERPRINTS-----\n\
                    256 SHA256:short (ED25519)\n\
                    SHA256:Xk2vL9pQ8sT1uY3wR5zA7bC9dE1fG3hJ5kL7mN9pQ2s (ED25519)\n\
                    256 SHA256:Xk2vL9pQ8sT1uY3wR5zA7bC9dE1fG3hJ5kL7mN9pQ2s no type\n\
                    -----END SSH HOST KEY FINGERPRINTS-----\n\
                    -----BEGIN SSH HOST KEY KEYS-----\n\
                    ssh-ed25519 not*base64\n\
                    -----END SSH HOST KEY KEYS-----\n";
        assert!(parse_console(text).is_empty());
    }
}
