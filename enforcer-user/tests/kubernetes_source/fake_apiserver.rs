//! A small fake Kubernetes API server on 127.0.0.1: just enough of the list/watch protocol for
//! kube-rs watchers (no discovery, no auth, no TLS).
//!
//! - `GET <collection>`: a list with `metadata.resourceVersion`, `limit` + `continue` paging,
//!   and `fieldSelector` (`a.b=v`, `a.b==v`, `a.b!=v`, comma-separated). Items of core and
//!   `networking.k8s.io` kinds carry no `apiVersion`/`kind`, as the real server sends them.
//! - `GET <collection>?watch=true&resourceVersion=N`: a chunked stream of JSON lines, one
//!   `{"type","object"}` event each (ADDED, MODIFIED, DELETED, BOOKMARK when
//!   `allowWatchBookmarks=true`, ERROR): first the logged events after N, then live ones.
//!   A watch from before the last compaction gets `ERROR` 410 Gone at once, as does every open
//!   watch on [`FakeApiServer::gone`].
//! - Unknown paths (and collections marked missing, like a CRD not installed) answer
//!   `404 page not found` in plain text, as the real server does for an unknown group.
//!
//! Every request is recorded ([`FakeApiServer::requests`]); lists of a held collection wait
//! until it is released ([`FakeApiServer::hold_lists`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{broadcast, watch},
    task::JoinHandle,
};

/// One request the server answered.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub query: BTreeMap<String, String>,
}

impl Request {
    pub fn is_watch(&self) -> bool {
        matches!(
            self.query.get("watch").map(String::as_str),
            Some("true" | "1")
        )
    }
}

#[derive(Default)]
struct Collection {
    api_version: String,
    kind: String,
    objects: BTreeMap<(String, String), Value>,
    /// (resourceVersion, type, object) of every event since the last compaction.
    log: Vec<(u64, &'static str, Value)>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    missing: bool,
}

#[derive(Clone, Debug)]
enum Broadcast {
    Event {
        path: String,
        rv: u64,
        kind: &'static str,
        object: Value,
    },
    Bookmark {
        path: String,
        rv: u64,
    },
    Gone {
        path: String,
    },
}

struct Inner {
    rv: u64,
    collections: BTreeMap<String, Collection>,
    requests: Vec<Request>,
}

struct Shared {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Broadcast>,
    held: watch::Sender<BTreeSet<String>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

pub struct FakeApiServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn key_of(obj: &Value) -> (String, String) {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (s("/metadata/namespace"), s("/metadata/name"))
}

/// Whether the collection's list items omit apiVersion/kind (built-in kinds do).
fn builtin(api_version: &str) -> bool {
    api_version == "v1" || api_version.starts_with("networking.k8s.io/")
}

impl FakeApiServer {
    /// Serves `collections`: (URL path, apiVersion, kind), e.g.
    /// `("/api/v1/pods", "v1", "Pod")`.
    pub async fn start(collections: &[(&str, &str, &str)]) -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (events, _) = broadcast::channel(1024);
        let (held, _) = watch::channel(BTreeSet::new());
        let mut map = BTreeMap::new();
        for (path, api_version, kind) in collections {
            map.insert(
                (*path).to_string(),
                Collection {
                    api_version: (*api_version).to_string(),
                    kind: (*kind).to_string(),
                    ..Collection::default()
                },
            );
        }
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                rv: 100,
                collections: map,
                requests: Vec::new(),
            }),
            events,
            held,
        });
        let accept_shared = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = accept_shared.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, shared).await;
                });
            }
        });
        FakeApiServer { addr, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates or replaces an object, logging and broadcasting ADDED or MODIFIED.
    pub fn put(&self, path: &str, object: Value) {
        self.change(path, Some(object), None, true);
    }

    /// Deletes an object, logging and broadcasting DELETED.
    pub fn delete(&self, path: &str, namespace: &str, name: &str) {
        self.change(path, None, Some((namespace, name)), true);
    }

    /// Creates or replaces an object without any watch event, as if the event had been lost
    /// to compaction: watches from before it get 410 Gone.
    pub fn put_silently(&self, path: &str, object: Value) {
        self.change(path, Some(object), None, false);
    }

    /// Deletes an object without any watch event (see [`FakeApiServer::put_silently`]).
    pub fn delete_silently(&self, path: &str, namespace: &str, name: &str) {
        self.change(path, None, Some((namespace, name)), false);
    }

    fn change(
        &self,
        path: &str,
        object: Option<Value>,
        delete: Option<(&str, &str)>,
        announce: bool,
    ) {
        let mut inner = self.shared.lock();
        inner.rv += 1;
        let rv = inner.rv;
        let coll = inner
            .collections
            .get_mut(path)
            .unwrap_or_else(|| panic!("unknown collection {path}"));
        let (kind, object) = match (object, delete) {
            (Some(mut obj), _) => {
                obj["apiVersion"] = json!(coll.api_version);
                obj["kind"] = json!(coll.kind);
                obj["metadata"]["resourceVersion"] = json!(rv.to_string());
                if obj.pointer("/metadata/uid").is_none() {
                    let (ns, name) = key_of(&obj);
                    obj["metadata"]["uid"] = json!(format!("uid-{ns}-{name}"));
                }
                let key = key_of(&obj);
                let kind = if coll.objects.contains_key(&key) {
                    "MODIFIED"
                } else {
                    "ADDED"
                };
                coll.objects.insert(key, obj.clone());
                (kind, obj)
            }
            (None, Some((ns, name))) => {
                let Some(mut obj) = coll.objects.remove(&(ns.to_string(), name.to_string())) else {
                    panic!("no object {ns}/{name} in {path}");
                };
                obj["metadata"]["resourceVersion"] = json!(rv.to_string());
                ("DELETED", obj)
            }
            (None, None) => unreachable!(),
        };
        if announce {
            coll.log.push((rv, kind, object.clone()));
            let _ = self.shared.events.send(Broadcast::Event {
                path: path.to_string(),
                rv,
                kind,
                object,
            });
        } else {
            coll.log.clear();
            coll.compacted = rv;
        }
    }

    /// Sends a BOOKMARK at the current resourceVersion to every open watch of `path`.
    pub fn bookmark(&self, path: &str) {
        let rv = self.shared.lock().rv;
        let _ = self.shared.events.send(Broadcast::Bookmark {
            path: path.to_string(),
            rv,
        });
    }

    /// Ends every open watch of `path` with an ERROR 410 Gone event, and compacts its log so a
    /// resumed watch gets 410 too: the client has to relist.
    pub fn gone(&self, path: &str) {
        {
            let mut inner = self.shared.lock();
            let rv = inner.rv;
            if let Some(c) = inner.collections.get_mut(path) {
                c.log.clear();
                c.compacted = rv + 1;
            }
        }
        let _ = self.shared.events.send(Broadcast::Gone {
            path: path.to_string(),
        });
    }

    /// Lists of `path` wait until [`FakeApiServer::release_lists`].
    pub fn hold_lists(&self, path: &str) {
        self.shared.held.send_modify(|h| {
            h.insert(path.to_string());
        });
    }

    pub fn release_lists(&self, path: &str) {
        self.shared.held.send_modify(|h| {
            h.remove(path);
        });
    }

    /// A missing collection answers 404 (a CRD that is not installed).
    pub fn set_missing(&self, path: &str, missing: bool) {
        let mut inner = self.shared.lock();
        if let Some(c) = inner.collections.get_mut(path) {
            c.missing = missing;
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_target(target: &str) -> Request {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Request {
        path: path.to_string(),
        query,
    }
}

/// `fieldSelector` terms: (dotted path, equal?, value).
fn field_selector(req: &Request) -> Vec<(String, bool, String)> {
    let Some(sel) = req.query.get("fieldSelector") else {
        return Vec::new();
    };
    sel.split(',')
        .filter(|t| !t.is_empty())
        .map(|t| {
            if let Some((k, v)) = t.split_once("!=") {
                (k.to_string(), false, v.to_string())
            } else if let Some((k, v)) = t.split_once("==") {
                (k.to_string(), true, v.to_string())
            } else {
                let (k, v) = t.split_once('=').unwrap_or((t, ""));
                (k.to_string(), true, v.to_string())
            }
        })
        .collect()
}

fn matches(obj: &Value, terms: &[(String, bool, String)]) -> bool {
    terms.iter().all(|(path, eq, want)| {
        let pointer = format!("/{}", path.replace('.', "/"));
        let have = obj
            .pointer(&pointer)
            .and_then(Value::as_str)
            .unwrap_or_default();
        (have == want) == *eq
    })
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
        }
        let n = stream.read(&mut byte).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&byte[..n]);
        if buf.len() > 64 * 1024 {
            return Ok(None);
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    ctype: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await
}

async fn chunk(stream: &mut TcpStream, event: &Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream
        .write_all(format!("{:x}\r\n", line.len()).as_bytes())
        .await?;
    stream.write_all(&line).await?;
    stream.write_all(b"\r\n").await?;
    stream.flush().await
}

async fn serve(mut stream: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let Some(head) = read_head(&mut stream).await? else {
        return Ok(());
    };
    let target = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/")
        .to_string();
    let req = parse_target(&target);
    let known = {
        let mut inner = shared.lock();
        inner.requests.push(req.clone());
        inner.collections.get(&req.path).is_some_and(|c| !c.missing)
    };
    if !known {
        return respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            b"404 page not found\n",
        )
        .await;
    }
    if req.is_watch() {
        serve_watch(stream, shared, req).await
    } else {
        // Held lists wait for release.
        let mut held = shared.held.subscribe();
        let path = req.path.clone();
        let _ = held.wait_for(|h| !h.contains(&path)).await;
        let body = list(&shared, &req);
        respond(
            &mut stream,
            "200 OK",
            "application/json",
            body.to_string().as_bytes(),
        )
        .await
    }
}

fn list(shared: &Shared, req: &Request) -> Value {
    let inner = shared.lock();
    let Some(coll) = inner.collections.get(&req.path) else {
        return json!({});
    };
    let terms = field_selector(req);
    let strip = builtin(&coll.api_version);
    let items: Vec<Value> = coll
        .objects
        .values()
        .filter(|o| matches(o, &terms))
        .map(|o| {
            let mut o = o.clone();
            if strip && let Some(m) = o.as_object_mut() {
                m.remove("apiVersion");
                m.remove("kind");
            }
            o
        })
        .collect();
    // Paging: `continue` is "<offset>/<resourceVersion>".
    let (offset, rv) = match req.query.get("continue").and_then(|c| c.split_once('/')) {
        Some((o, rv)) => (o.parse().unwrap_or(0), rv.to_string()),
        None => (0usize, inner.rv.to_string()),
    };
    let limit = req
        .query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let end = offset.saturating_add(limit).min(items.len());
    let page: Vec<Value> = items[offset.min(end)..end].to_vec();
    let mut metadata = json!({ "resourceVersion": rv });
    if end < items.len() {
        metadata["continue"] = json!(format!("{end}/{rv}"));
    }
    json!({
        "apiVersion": coll.api_version,
        "kind": format!("{}List", coll.kind),
        "metadata": metadata,
        "items": page,
    })
}

fn gone_event(rv: u64) -> Value {
    json!({
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": format!("too old resource version: {rv}"),
            "reason": "Expired",
            "code": 410
        }
    })
}

async fn serve_watch(
    mut stream: TcpStream,
    shared: Arc<Shared>,
    req: Request,
) -> std::io::Result<()> {
    let from: u64 = req
        .query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = req.query.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let timeout = req
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(300u64);
    let terms = field_selector(&req);
    // Subscribe before reading the log so no event falls between the two.
    let mut rx = shared.events.subscribe();
    let (backlog, expired, api_version, kind) = {
        let inner = shared.lock();
        let coll = &inner.collections[&req.path];
        let expired = from < coll.compacted;
        let backlog: Vec<(u64, &'static str, Value)> = coll
            .log
            .iter()
            .filter(|(rv, _, _)| *rv > from)
            .cloned()
            .collect();
        (
            backlog,
            expired,
            coll.api_version.clone(),
            coll.kind.clone(),
        )
    };
    stream
        .write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        )
        .await?;
    if expired {
        chunk(&mut stream, &gone_event(from)).await?;
        return stream.write_all(b"0\r\n\r\n").await;
    }
    let mut last = from;
    for (rv, kind, object) in backlog {
        if matches(&object, &terms) {
            chunk(&mut stream, &json!({ "type": kind, "object": object })).await?;
        }
        last = rv;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            () = tokio::time::sleep_until(deadline) => break,
        };
        match msg {
            Ok(Broadcast::Event {
                path,
                rv,
                kind,
                object,
            }) if path == req.path && rv > last => {
                last = rv;
                if matches(&object, &terms) {
                    chunk(&mut stream, &json!({ "type": kind, "object": object })).await?;
                }
            }
            Ok(Broadcast::Bookmark { path, rv }) if path == req.path && bookmarks => {
                last = last.max(rv);
                let event = json!({
                    "type": "BOOKMARK",
                    "object": {
                        "apiVersion": api_version,
                        "kind": kind,
                        "metadata": { "resourceVersion": rv.to_string() }
                    }
                });
                chunk(&mut stream, &event).await?;
            }
            Ok(Broadcast::Gone { path }) if path == req.path => {
                chunk(&mut stream, &gone_event(last)).await?;
                break;
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_))
            | Err(broadcast::error::RecvError::Closed) => {
                break;
            }
        }
    }
    stream.write_all(b"0\r\n\r\n").await?;
    stream.flush().await
}
