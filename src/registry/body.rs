//! Request bodies of registry calls. A blob streams from its file range in 1 MiB reads with an exact length (so
//! the request carries Content-Length: ECR mishandles chunked uploads), is hashed as it goes (the digest is checked
//! before the upload is committed), and reports bytes sent for progress. Only one read buffer per upload is alive,
//! so memory stays flat whatever the layer size.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;
use http_body::{Body, Frame, SizeHint};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::source::hex;

const READ_SIZE: usize = 1 << 20;

/// Called with the number of bytes just handed to the connection.
pub type OnSent = Arc<dyn Fn(u64) + Send + Sync>;

/// What a blob body saw once the request is over.
#[derive(Debug, Default, Clone)]
pub struct Streamed {
    /// `sha256:<hex>` of everything read, once the whole range was read.
    pub digest: Option<String>,
    /// A local read failure (not the network's): not worth a retry.
    pub read_error: Option<String>,
}

/// Body of a registry request.
pub enum RequestBody {
    Empty,
    Bytes(Option<Bytes>),
    Blob {
        stream: BoxStream<'static, std::io::Result<Bytes>>,
        remaining: u64,
    },
}

impl RequestBody {
    pub fn bytes(b: Bytes) -> RequestBody {
        RequestBody::Bytes(Some(b))
    }

    /// `len` bytes of `path` from `offset`, hashed into `outcome` and counted through `on_sent`.
    pub fn file_range(
        path: PathBuf,
        offset: u64,
        len: u64,
        outcome: Arc<Mutex<Streamed>>,
        on_sent: OnSent,
    ) -> RequestBody {
        struct State {
            file: Option<tokio::fs::File>,
            path: PathBuf,
            offset: u64,
            left: u64,
            hasher: Sha256,
            outcome: Arc<Mutex<Streamed>>,
            on_sent: OnSent,
        }
        let fail = |outcome: &Arc<Mutex<Streamed>>, msg: String| {
            outcome.lock().unwrap_or_else(|e| e.into_inner()).read_error = Some(msg.clone());
            std::io::Error::other(msg)
        };
        let state = State {
            file: None,
            path,
            offset,
            left: len,
            hasher: Sha256::new(),
            outcome,
            on_sent,
        };
        let stream = futures::stream::try_unfold(state, move |mut s| async move {
            if s.left == 0 {
                return Ok(None);
            }
            if s.file.is_none() {
                let mut f = tokio::fs::File::open(&s.path)
                    .await
                    .map_err(|e| fail(&s.outcome, format!("cannot open {}: {e}", s.path.display())))?;
                f.seek(std::io::SeekFrom::Start(s.offset))
                    .await
                    .map_err(|e| fail(&s.outcome, format!("cannot read {}: {e}", s.path.display())))?;
                s.file = Some(f);
            }
            let want = (s.left as usize).min(READ_SIZE);
            let mut buf = vec![0u8; want];
            let file = s.file.as_mut().expect("opened above");
            let mut filled = 0;
            while filled < want {
                let n = file
                    .read(&mut buf[filled..])
                    .await
                    .map_err(|e| fail(&s.outcome, format!("cannot read {}: {e}", s.path.display())))?;
                if n == 0 {
                    return Err(fail(
                        &s.outcome,
                        format!(
                            "{} ended {} bytes early (truncated while pushing?)",
                            s.path.display(),
                            s.left - filled as u64
                        ),
                    ));
                }
                filled += n;
            }
            s.hasher.update(&buf);
            s.left -= want as u64;
            // The connection stops polling once Content-Length bytes are out, so the digest is taken with the last
            // chunk rather than at end of stream.
            if s.left == 0 {
                let digest = format!("sha256:{}", hex(&std::mem::take(&mut s.hasher).finalize()));
                s.outcome.lock().unwrap_or_else(|e| e.into_inner()).digest = Some(digest);
            }
            (s.on_sent)(want as u64);
            Ok(Some((Bytes::from(buf), s)))
        });
        RequestBody::Blob {
            stream: Box::pin(stream),
            remaining: len,
        }
    }

    pub fn content_length(&self) -> u64 {
        match self {
            RequestBody::Empty | RequestBody::Bytes(None) => 0,
            RequestBody::Bytes(Some(b)) => b.len() as u64,
            RequestBody::Blob { remaining, .. } => *remaining,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Bytes(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Blob { stream, remaining } => match Pin::new(stream).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    *remaining = remaining.saturating_sub(chunk.len() as u64);
                    Poll::Ready(Some(Ok(Frame::data(chunk))))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.content_length() == 0 && !matches!(self, RequestBody::Blob { .. })
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.content_length())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn streams_a_range_with_its_digest_and_exact_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let outcome = Arc::new(Mutex::new(Streamed::default()));
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = sent.clone();
        let body = RequestBody::file_range(
            path.clone(),
            100,
            2_500_000,
            outcome.clone(),
            Arc::new(move |n| {
                counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }),
        );
        assert_eq!(body.size_hint().exact(), Some(2_500_000));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], &data[100..2_500_100]);
        assert_eq!(sent.load(std::sync::atomic::Ordering::Relaxed), 2_500_000);
        let want = super::super::source::sha256_digest(&data[100..2_500_100]);
        assert_eq!(outcome.lock().unwrap().digest.as_deref(), Some(want.as_str()));

        // A file shorter than the range is a local error, recorded as such.
        let outcome = Arc::new(Mutex::new(Streamed::default()));
        let body = RequestBody::file_range(path, 2_999_000, 5000, outcome.clone(), Arc::new(|_| {}));
        assert!(body.collect().await.is_err());
        assert!(
            outcome
                .lock()
                .unwrap()
                .read_error
                .as_deref()
                .unwrap()
                .contains("ended 4000 bytes early")
        );
    }
}
