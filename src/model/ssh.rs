//! SSH access (`spec.ssh`, the bastion) and provider hosts' machines (`spec.hosts`): types and validation.

use super::*;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ssh {
    /// The OpenSSH public key line, read from `publicKeyFile` when given that way.
    pub public_key: Option<String>,
    /// As written in the spec, so the defaulted spec round-trips.
    pub public_key_file: Option<String>,
    pub allowed_cidrs: Vec<Ipv4Net>,
    pub bastion: Option<Bastion>,
    /// The private key to log in with (resolved against the spec file's directory); `None`: the ssh-agent's keys.
    pub identity_file: Option<PathBuf>,
    /// `identityFile` as written, so the defaulted spec round-trips.
    pub identity_file_as_written: Option<String>,
    /// As written; see [`Cluster::ssh_user`] for the effective one.
    pub user: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bastion {
    pub instance_type: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    /// Resolved against the spec file's directory.
    pub identity_file: PathBuf,
    /// As written, for rendering the spec back.
    pub identity_file_as_written: String,
    pub role: HostRole,
    pub host_key: Option<String>,
}

pub(super) fn ssh(c: &mut Checker, spec: Option<&SshSpec>, ctx: &Context, provider: Provider) -> Ssh {
    let Some(spec) = spec else {
        return Ssh::default();
    };
    let public_key = match (&spec.public_key, &spec.public_key_file) {
        (Some(_), Some(_)) => {
            c.err(
                "spec.ssh.publicKeyFile",
                "publicKey and publicKeyFile exclude each other",
                "use one of them",
            );
            None
        }
        (Some(k), None) => Some(k.trim().to_string()),
        // An OpenSSH public key is one line of well under a kilobyte; 64 KiB bounds what a wrong path (a device,
        // a disk image) makes kforge read.
        (None, Some(f)) => match crate::fsutil::read_limited(&ctx.base_dir.join(f), 64 * 1024)
            .and_then(|b| String::from_utf8(b).map_err(|_| std::io::Error::other("not UTF-8 text")))
        {
            Ok(k) => Some(k.trim().to_string()),
            Err(e) => {
                c.err(
                    "spec.ssh.publicKeyFile",
                    format!("cannot read `{f}`: {e}"),
                    "give a path relative to the spec file",
                );
                None
            }
        },
        (None, None) => None,
    };
    if let Some(k) = &public_key
        && !is_public_key(k)
    {
        let path = if spec.public_key_file.is_some() {
            "spec.ssh.publicKeyFile"
        } else {
            "spec.ssh.publicKey"
        };
        c.err(
            path,
            "not an OpenSSH public key",
            "give one line such as `ssh-ed25519 AAAA... you@host` (the .pub file)",
        );
    }
    let mut allowed_cidrs = Vec::new();
    for (i, text) in spec.allowed_cidrs.iter().flatten().enumerate() {
        if let Some(net) = c.cidr(&format!("spec.ssh.allowedCidrs[{i}]"), text) {
            allowed_cidrs.push(net);
        }
    }
    let bastion = spec
        .bastion
        .as_ref()
        .filter(|b| b.enabled.unwrap_or(false))
        .map(|b| Bastion {
            instance_type: b.instance_type.clone().unwrap_or_else(|| "t3.micro".into()),
        });
    if bastion.is_some() && provider != Provider::Ec2 {
        c.err(
            "spec.ssh.bastion",
            format!("provider {provider} creates no bastion"),
            "remove spec.ssh.bastion",
        );
    }
    // The private half of a key given as a file sits next to it, as ssh-keygen writes them.
    let identity_file_as_written = spec.identity_file.clone().or_else(|| {
        spec.public_key_file
            .as_ref()
            .and_then(|f| f.strip_suffix(".pub"))
            .map(str::to_string)
    });
    if spec.identity_file.as_ref().is_some_and(|f| f.trim().is_empty()) {
        c.err(
            "spec.ssh.identityFile",
            "empty path",
            "give the private key kforge logs in with, or remove the field to use the ssh-agent",
        );
    }
    if let Some(u) = &spec.user
        && (u.is_empty() || u.contains(|ch: char| ch.is_whitespace() || ch == '@'))
    {
        c.err(
            "spec.ssh.user",
            format!("`{u}` is not a user name"),
            "give a login name such as ec2-user",
        );
    }
    Ssh {
        public_key,
        public_key_file: spec.public_key_file.clone(),
        allowed_cidrs,
        bastion,
        identity_file: identity_file_as_written.as_ref().map(|f| ctx.base_dir.join(f)),
        identity_file_as_written,
        user: spec.user.clone(),
    }
}

pub(super) fn hosts(c: &mut Checker, spec: Option<&[HostSpec]>, ctx: &Context, provider: Provider) -> Vec<Host> {
    if provider != Provider::Hosts {
        if spec.is_some() {
            c.err(
                "spec.hosts",
                format!("provider {provider} creates its own machines"),
                "remove spec.hosts, or use provider: hosts",
            );
        }
        return Vec::new();
    }
    let Some(spec) = spec.filter(|h| !h.is_empty()) else {
        c.err(
            "spec.hosts",
            "provider hosts needs the machines listed",
            "list each host with name, address, identityFile and role",
        );
        return Vec::new();
    };
    let mut names = BTreeSet::new();
    let mut endpoints = BTreeSet::new();
    let mut out = Vec::new();
    for (i, h) in spec.iter().enumerate() {
        let path = format!("spec.hosts[{i}]");
        if !is_dns_label(&h.name, 63) {
            c.err(
                format!("{path}.name"),
                format!("`{}` is not a valid host name", h.name),
                "use lowercase letters, digits and '-'",
            );
        }
        if !names.insert(h.name.clone()) {
            c.err(
                format!("{path}.name"),
                format!("host `{}` is listed twice", h.name),
                "give each host its own name",
            );
        }
        let port = h.port.unwrap_or(22);
        if h.address.trim().is_empty() || h.address.contains(char::is_whitespace) {
            c.err(
                format!("{path}.address"),
                "not an address",
                "give an IP address or DNS name",
            );
        } else if !endpoints.insert((h.address.clone(), port)) {
            c.err(
                format!("{path}.address"),
                format!("{}:{port} is used by two hosts", h.address),
                "each host needs its own address",
            );
        }
        // Existence is checked when the hosts are contacted, not here: a spec stays valid on any machine.
        let identity_file = ctx.base_dir.join(&h.identity_file);
        if h.identity_file.trim().is_empty() {
            c.err(
                format!("{path}.identityFile"),
                "empty path",
                "give the private key used to log in, relative to the spec file",
            );
        }
        if let Some(k) = &h.host_key
            && !is_public_key(k)
        {
            c.err(
                format!("{path}.hostKey"),
                "not an OpenSSH public key line",
                "copy a line of /etc/ssh/ssh_host_*_key.pub",
            );
        }
        out.push(Host {
            name: h.name.clone(),
            address: h.address.clone(),
            port,
            user: h.user.clone().unwrap_or_else(|| "root".into()),
            identity_file,
            identity_file_as_written: h.identity_file.clone(),
            role: h.role,
            host_key: h.host_key.clone(),
        });
    }
    let masters = out.iter().filter(|h| h.role == HostRole::Master).count();
    if masters == 0 {
        c.err(
            "spec.hosts",
            "no host has role master",
            "give one, three or five hosts role: master",
        );
    } else if masters % 2 == 0 {
        c.err(
            "spec.hosts",
            format!("{masters} masters cannot keep an etcd quorum well"),
            "use 1, 3 or 5 masters (an odd number keeps etcd available through failures)",
        );
    }
    out
}
