//! `kforge push image`, to ECR or any registry.

use super::*;

pub(super) async fn push_image(s: &Session<'_>, args: PushImageArgs) -> anyhow::Result<Finished> {
    let g = s.g;
    let source = registry::Source::parse(&args.source)?;
    let target = registry::Target::parse(&args.target)?;
    let credentials = match args.username.clone() {
        Some(username) => {
            let password = if args.password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("cannot read the password from stdin")?;
                line.trim_end_matches(['\n', '\r']).to_string()
            } else {
                std::env::var("KFORGE_REGISTRY_PASSWORD").map_err(|_| {
                    anyhow::anyhow!(
                        "--username needs a password\n  hint: pipe it to --password-stdin or set KFORGE_REGISTRY_PASSWORD"
                    )
                })?
            };
            Some(registry::Credentials { username, password })
        }
        None => None,
    };
    // The source is read and checked first: a broken image fails before any AWS or registry call.
    let image = registry::load_source(&source).await?;
    let settings = registry::ecr::RepositorySettings {
        scan_on_push: args.scan_on_push,
        immutable_tags: args.immutable_tags,
        keep_images: args.keep_images,
        expire_untagged_days: args.expire_untagged_days,
    };
    let endpoint = args.registry_endpoint.as_deref();
    let dest = match &target {
        registry::Target::Ecr { repository, tag } => {
            let aws = s.aws(None).await;
            if aws.region().is_empty() {
                anyhow::bail!(
                    "pushing to ECR repository {repository} needs a region\n  hint: pass --region or set AWS_REGION, \
                     or give a full registry reference HOST/REPO:TAG"
                );
            }
            let tag = registry::effective_tag(tag.as_deref(), &image);
            ecr_push_destination(g, &aws, repository, None, tag, &settings, endpoint).await?
        }
        registry::Target::Registry(r) => {
            let tag = registry::effective_tag(r.tag.as_deref(), &image);
            match registry::EcrHost::parse(&r.registry) {
                Some(host) => {
                    let aws = s.aws(Some(&host.region)).await;
                    let account = Some(host.account.as_str());
                    ecr_push_destination(g, &aws, &r.repository, account, tag, &settings, endpoint).await?
                }
                None => registry::registry_destination(r, tag, args.insecure, credentials)?,
            }
        }
    };
    let opts = registry::PushOptions {
        jobs: args.jobs as usize,
        attempts: args.attempts as usize,
        ..Default::default()
    };
    if !g.quiet {
        eprintln!(
            "pushing {} ({} blobs, {}) to {}:{}",
            image.source,
            image.blobs.len(),
            registry::source::human_bytes(image.total_size()),
            dest.name(),
            dest.tag.as_deref().unwrap_or_default()
        );
    }
    let report = registry::push_image(&image, &dest, &opts, g.quiet).await?;
    if !g.quiet {
        eprintln!(
            "pushed {} in {:.1}s: {} uploaded ({}), {} already present, {} mounted",
            report.reference,
            report.seconds,
            report.blobs_uploaded,
            registry::source::human_bytes(report.bytes_sent),
            report.blobs_present,
            report.blobs_mounted
        );
    }
    print(g.output, &report, || format!("{}\n", report.digest))?;
    Ok(Finished::Ok)
}

/// Finds or creates the ECR repository (and says so), then points the push at its registry.
pub(super) async fn ecr_push_destination(
    g: &GlobalArgs,
    aws: &Aws,
    repository: &str,
    account: Option<&str>,
    tag: String,
    settings: &registry::ecr::RepositorySettings,
    endpoint: Option<&str>,
) -> anyhow::Result<registry::Destination> {
    let (dest, repo) = registry::ecr_destination(aws, repository, account, tag, settings, endpoint).await?;
    if !g.quiet {
        if repo.created {
            eprintln!("created ECR repository {} in {}", repo.name, aws.region());
        }
        for change in &repo.updated {
            eprintln!("updated ECR repository {}: {change}", repo.name);
        }
    }
    Ok(dest)
}
