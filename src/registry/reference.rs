//! What `kforge push image SOURCE TARGET` names: the image source (`oci:`, `docker-archive:`, `docker-daemon:` or a
//! bare daemon `NAME:TAG`) and the target (an ECR repository name, an ECR registry host, or any
//! `HOST[:PORT]/REPO[:TAG]`), parsed with Docker's rules so references mean what they mean to `docker push`.

use std::fmt;
use std::path::PathBuf;

/// Where the image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An OCI image layout directory; the tag picks a manifest by its `org.opencontainers.image.ref.name`.
    OciLayout { dir: PathBuf, tag: Option<String> },
    /// A `docker save` tar; `image` picks one of its RepoTags when it holds several.
    DockerArchive { file: PathBuf, image: Option<String> },
    /// An image of a local Docker daemon, read through the Engine API.
    DockerDaemon { name: String },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::OciLayout { dir, tag: Some(t) } => write!(f, "oci:{}:{t}", dir.display()),
            Source::OciLayout { dir, tag: None } => write!(f, "oci:{}", dir.display()),
            Source::DockerArchive { file, image: Some(i) } => write!(f, "docker-archive:{}:{i}", file.display()),
            Source::DockerArchive { file, image: None } => write!(f, "docker-archive:{}", file.display()),
            Source::DockerDaemon { name } => write!(f, "docker-daemon:{name}"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what} `{input}`: {problem}\n  hint: {hint}")]
pub struct ReferenceError {
    what: &'static str,
    input: String,
    problem: String,
    hint: &'static str,
}

const SOURCE_HINT: &str = "use oci:DIR[:TAG], docker-archive:FILE.tar[:NAME:TAG], docker-daemon:NAME:TAG or NAME:TAG";
const TARGET_HINT: &str =
    "use an ECR repository name (REPO[:TAG]) or a registry reference HOST[:PORT]/REPO[:TAG], lower-case";

impl Source {
    pub fn parse(input: &str) -> Result<Source, ReferenceError> {
        let err = |problem: &str| ReferenceError {
            what: "image source",
            input: input.to_string(),
            problem: problem.to_string(),
            hint: SOURCE_HINT,
        };
        if let Some(rest) = input.strip_prefix("oci:") {
            // `oci:DIR:TAG`: the tag is what follows the last colon, unless that looks like part of a path.
            let (dir, tag) = match rest.rsplit_once(':') {
                Some((dir, tag)) if !tag.contains('/') && !dir.is_empty() => (dir, Some(tag)),
                _ => (rest, None),
            };
            if dir.is_empty() {
                return Err(err("no directory given"));
            }
            if let Some(t) = tag
                && !valid_tag(t)
            {
                return Err(err(&format!("`{t}` is not a valid tag")));
            }
            return Ok(Source::OciLayout {
                dir: PathBuf::from(dir),
                tag: tag.map(str::to_string),
            });
        }
        if let Some(rest) = input.strip_prefix("docker-archive:") {
            // The file name may itself contain colons; the image name after it always has one (NAME:TAG), so the
            // first colon whose prefix ends in `.tar` (or names an existing file) separates them.
            let split = rest
                .match_indices(':')
                .map(|(i, _)| i)
                .find(|&i| rest[..i].ends_with(".tar") || std::path::Path::new(&rest[..i]).is_file());
            let (file, image) = match split {
                Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                None => (rest, None),
            };
            if file.is_empty() {
                return Err(err("no file given"));
            }
            return Ok(Source::DockerArchive {
                file: PathBuf::from(file),
                image: image.filter(|i| !i.is_empty()).map(str::to_string),
            });
        }
        let name = input.strip_prefix("docker-daemon:").unwrap_or(input);
        if name.is_empty() {
            return Err(err("no image name given"));
        }
        if let Some((transport, _)) = name.split_once(':')
            && matches!(transport, "docker" | "oci-archive" | "dir" | "containers-storage")
        {
            return Err(err(&format!("the `{transport}:` transport is not supported")));
        }
        Ok(Source::DockerDaemon { name: name.to_string() })
    }
}

/// Where the image goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A repository of the account's ECR registry in the run's region; created when missing.
    Ecr { repository: String, tag: Option<String> },
    /// Any registry, including an ECR registry named by host.
    Registry(ImageRef),
}

/// `HOST[:PORT]/REPO[:TAG]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `host[:port]`, as written.
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        Ok(())
    }
}

/// An ECR registry host: `ACCOUNT.dkr.ecr.REGION.amazonaws.com[.cn]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrHost {
    pub account: String,
    pub region: String,
}

impl EcrHost {
    pub fn parse(host: &str) -> Option<EcrHost> {
        let rest = host
            .strip_suffix(".amazonaws.com")
            .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
        let (account, rest) = rest.split_once(".dkr.ecr.")?;
        let ok_account = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
        let ok_region = !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        (ok_account && ok_region).then(|| EcrHost {
            account: account.to_string(),
            region: rest.to_string(),
        })
    }
}

impl Target {
    pub fn parse(input: &str) -> Result<Target, ReferenceError> {
        let err = |problem: String| ReferenceError {
            what: "push target",
            input: input.to_string(),
            problem,
            hint: TARGET_HINT,
        };
        if input.contains('@') {
            return Err(err("a digest cannot be pushed to; give a tag (or none)".into()));
        }
        if input.contains("://") {
            return Err(err(
                "give a reference, not a URL (use --insecure for plain-HTTP registries)".into(),
            ));
        }
        // Docker's rule: the first component is a registry host when it has a dot or a port, or is localhost.
        let (host, path) = match input.split_once('/') {
            Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (Some(first), rest)
            }
            _ => (None, input),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) => (repo, Some(tag)),
            None => (path, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(err(format!(
                "`{t}` is not a valid tag (letters, digits, _ . -; at most 128)"
            )));
        }
        if !valid_repository(repository) {
            return Err(err(format!(
                "`{repository}` is not a valid repository name (lower-case letters, digits and separators . _ - /)"
            )));
        }
        let tag = tag.map(str::to_string);
        let repository = repository.to_string();
        Ok(match host {
            None => Target::Ecr { repository, tag },
            Some(h) => Target::Registry(ImageRef {
                registry: h.to_string(),
                repository,
                tag,
            }),
        })
    }
}

/// A tag as the distribution spec allows: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn valid_tag(t: &str) -> bool {
    let mut bytes = t.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric() || b == b'_')
        && t.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Path components of lower-case alphanumerics joined by single `.`, `_`, `__` or runs of `-`.
fn valid_repository(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 255
        && r.split('/').all(|component| {
            let b = component.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-'))
                && !component.contains("..")
                && !component.contains("___")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        assert_eq!(
            Source::parse("oci:./out:v1").unwrap(),
            Source::OciLayout {
                dir: "./out".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            Source::parse("oci:/tmp/img").unwrap(),
            Source::OciLayout {
                dir: "/tmp/img".into(),
                tag: None
            }
        );
        assert_eq!(
            Source::parse("docker-archive:app.tar:team/app:1.0").unwrap(),
            Source::DockerArchive {
                file: "app.tar".into(),
                image: Some("team/app:1.0".into())
            }
        );
        assert_eq!(
            Source::parse("docker-archive:/x/app.tar").unwrap(),
            Source::DockerArchive {
                file: "/x/app.tar".into(),
                image: None
            }
        );
        assert_eq!(
            Source::parse("myapp:1.0").unwrap(),
            Source::DockerDaemon {
                name: "myapp:1.0".into()
            }
        );
        assert_eq!(
            Source::parse("docker-daemon:myapp:1.0").unwrap(),
            Source::DockerDaemon {
                name: "myapp:1.0".into()
            }
        );
        let e = Source::parse("docker://x/y").unwrap_err().to_string();
        assert!(e.contains("`docker:` transport is not supported"), "{e}");
        assert!(Source::parse("oci:").unwrap_err().to_string().contains("no directory"));
    }

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("team/app:1.2").unwrap(),
            Target::Ecr {
                repository: "team/app".into(),
                tag: Some("1.2".into())
            }
        );
        assert_eq!(
            Target::parse("127.0.0.1:5000/app").unwrap(),
            Target::Registry(ImageRef {
                registry: "127.0.0.1:5000".into(),
                repository: "app".into(),
                tag: None
            })
        );
        assert_eq!(
            Target::parse("localhost/a/b:x").unwrap(),
            Target::Registry(ImageRef {
                registry: "localhost".into(),
                repository: "a/b".into(),
                tag: Some("x".into())
            })
        );
        for bad in [
            "App:1",
            "app:-x",
            "a//b",
            "reg.io/app@sha256:00",
            "http://reg.io/app",
            "a/b-:1",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(
            Target::parse("App:1")
                .unwrap_err()
                .to_string()
                .contains("repository name")
        );
    }

    #[test]
    fn ecr_hosts() {
        assert_eq!(
            EcrHost::parse("123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
            Some(EcrHost {
                account: "123456789012".into(),
                region: "eu-west-1".into()
            })
        );
        assert_eq!(EcrHost::parse("registry.example.com"), None);
        assert_eq!(EcrHost::parse("12.dkr.ecr.x.amazonaws.com"), None);
    }
}
