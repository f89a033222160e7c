use super::*;

#[test]
fn challenges() {
    match parse_challenge(
        r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a:pull""#,
    ) {
        Scheme::Bearer { realm, service } => {
            assert_eq!(realm, "https://auth.docker.io/token");
            assert_eq!(service.as_deref(), Some("registry.docker.io"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(parse_challenge(r#"Basic realm="kforge""#), Scheme::Basic));
    assert!(matches!(parse_challenge(""), Scheme::Anonymous));
}

#[test]
fn registry_errors_are_read() {
    let body = br#"{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content"}]}"#;
    assert_eq!(
        error_suffix(body),
        ": DIGEST_INVALID: provided digest did not match uploaded content"
    );
    assert_eq!(error_suffix(b"<html>nope</html>"), "");
}

/// Hands out a stale password first, the good one when asked for fresh credentials.
struct Rotating {
    fresh_calls: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl CredentialSource for Rotating {
    async fn credentials(&self, fresh: bool) -> anyhow::Result<Credentials> {
        if fresh {
            self.fresh_calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(Credentials {
            username: "AWS".into(),
            password: if fresh { "new" } else { "stale" }.into(),
        })
    }
}

#[tokio::test]
async fn stale_credentials_are_refreshed_once_on_401() {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let good = basic(&Credentials {
        username: "AWS".into(),
        password: "new".into(),
    });
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let good = good.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let ok = req.headers().get(header::AUTHORIZATION) == Some(&good);
                    async move {
                        let mut r = Response::builder();
                        r = if ok {
                            r.status(200)
                        } else {
                            r.status(401).header(header::WWW_AUTHENTICATE, r#"Basic realm="ecr""#)
                        };
                        Ok::<_, std::convert::Infallible>(r.body(http_body_util::Empty::<Bytes>::new()).unwrap())
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let source = Arc::new(Rotating {
        fresh_calls: Default::default(),
    });
    let registry = Registry::new(&format!("http://127.0.0.1:{port}"), None, Some(source.clone())).unwrap();
    let scope = Scope::push("app");
    // First contact learns Basic; the stale password is refused once, then the fresh one works.
    registry.probe(&scope).await.unwrap();
    assert_eq!(source.fresh_calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    // A registry that refuses every password says so instead of looping.
    let static_bad = Registry::new(
        &format!("http://127.0.0.1:{port}"),
        Some(Credentials {
            username: "AWS".into(),
            password: "wrong".into(),
        }),
        None,
    )
    .unwrap();
    let e = static_bad.probe(&scope).await.unwrap_err().to_string();
    assert!(
        e.contains("401") && e.contains("hint: the credentials were refused"),
        "{e}"
    );
}

#[test]
fn server_errors_and_throttling_are_retried_client_errors_are_not() {
    let r = Registry::new("http://127.0.0.1:1", None, None).unwrap();
    for (status, transient) in [
        (500, true),
        (503, true),
        (429, true),
        (408, true),
        (400, false),
        (404, false),
    ] {
        let e = r.failure("upload", StatusCode::from_u16(status).unwrap(), b"");
        assert_eq!(e.transient, transient, "{status}");
    }
    let e = r.failure(
        "upload of manifest v1",
        StatusCode::FORBIDDEN,
        br#"{"errors":[{"code":"DENIED","message":"no"}]}"#,
    );
    assert!(
        e.message
            .contains("answered 403 Forbidden to the upload of manifest v1: DENIED: no"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("hint: the credentials may not push"),
        "{}",
        e.message
    );
}

#[test]
fn credentials_never_print_the_secret() {
    let c = Credentials {
        username: "AWS".into(),
        password: "s3cret".into(),
    };
    assert!(!format!("{c:?}").contains("s3cret"));
}
