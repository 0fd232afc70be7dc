//! Queryable state of `query-job` over HTTP, from outside, as a user's client sees
//! it: two processes of two workers each (both backends) answer every key from
//! every process and from the supervisor's gateway; states not marked queryable are
//! not listed and not found; `committed` stays at the last completed checkpoint
//! (equal to what the state processor reads from it) while `live` moves on; a
//! SIGKILLed process yields 503s or right values, never a wrong one; the catalogue of
//! bad requests gets 4xx answers and leaves the job as it was.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowstate_query_client::{BatchRequest, Consistency, QueryClient};
use serde_json::{Value, json};

/// What each state holds for key `k<key>` after `rounds` rounds: totals, rounds,
/// parity (the job's arithmetic, recomputed).
fn model(key: u64, rounds: u64) -> [Value; 3] {
    let sum: u64 = (0..rounds).map(|r| (key * 31 + r * 7) % 100).sum();
    let mut parity = serde_json::Map::new();
    let (even, odd) = (rounds.div_ceil(2), rounds / 2);
    if even > 0 {
        parity.insert("even".into(), json!(even));
    }
    if odd > 0 {
        parity.insert("odd".into(), json!(odd));
    }
    [
        json!([rounds, sum]),
        json!((0..rounds).collect::<Vec<_>>()),
        Value::Object(parity),
    ]
}

const STATES: [&str; 3] = ["totals", "rounds", "parity"];

fn keys(n: u64) -> Vec<Value> {
    (0..n).map(|k| json!(format!("k{k}"))).collect()
}

/// A base port with the `n` ports after it free a moment ago, below the kernel's
/// ephemeral range: a restarted process binds its port again, and in the moment it is
/// free a port of that range can become any outgoing connection's local port (seen in
/// CI, 2026-12-04: every restart of process 0 failed to bind `127.0.0.1:38178`).
fn free_ports(n: u16) -> u16 {
    // The range's low end (32768 by default); ports below it are never handed out
    // for outgoing connections.
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let first = 10_000u16;
    let span = u64::from(low.saturating_sub(first + n + 1).max(1));
    // Tests run in parallel: each call starts from its own point of the span, then
    // walks it a block of `n + 1` ports at a time.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let start = u64::from(std::process::id())
        ^ (CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) << 12)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()));
    let mut offset = start % span;
    loop {
        let base = first + u16::try_from(offset).unwrap_or(0);
        let all: Vec<_> = (0..=n)
            .map(|i| TcpListener::bind(("127.0.0.1", base + i)))
            .collect();
        if all.iter().all(Result::is_ok) {
            return base;
        }
        offset = (offset + u64::from(n + 1)) % span;
    }
}

/// The running children of `parent` (the job processes under the supervisor).
fn children(parent: u32) -> Vec<(u32, Option<usize>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(mut fields) = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace()) else {
            continue;
        };
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(parent) || state == Some("Z") {
            continue;
        }
        let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let index = environ
            .split(|b| *b == 0)
            .filter_map(|v| std::str::from_utf8(v).ok())
            .find_map(|v| v.strip_prefix("FLOWSTATE_PROCESS="))
            .and_then(|v| v.parse().ok());
        out.push((pid, index));
    }
    out
}

fn sigkill(pid: u32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

/// `query-job` running under the harness with `--query-addr`.
struct Job {
    child: Child,
    dir: tempfile::TempDir,
    base: u16,
    processes: usize,
}

impl Job {
    fn start(backend: &str, processes: usize, args: &[&str]) -> Job {
        let dir = tempfile::tempdir().unwrap();
        let base = free_ports(processes as u16);
        let mut c = Command::new(env!("CARGO_BIN_EXE_query-job"));
        c.args(["run", "--workers", "2", "--backend", backend])
            .args(["--processes", &processes.to_string()])
            .arg("--checkpoint-dir")
            .arg(dir.path().join("ck"))
            .args(["--query-addr", &format!("127.0.0.1:{base}")])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        Job {
            child: c.spawn().unwrap(),
            dir,
            base,
            processes,
        }
    }

    /// The gateway (several processes) or the only process.
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.base)
    }

    /// Process `i`'s own query address (several processes).
    fn process_addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.base + 1 + i as u16)
    }

    /// Every address a client may ask.
    fn addrs(&self) -> Vec<String> {
        let mut a = vec![self.addr()];
        if self.processes > 1 {
            a.extend((0..self.processes).map(|i| self.process_addr(i)));
        }
        a
    }

    fn ck(&self) -> PathBuf {
        self.dir.path().join("ck")
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits (up to 120 s; the job must stay up) until `ok`.
    fn wait_until(&mut self, what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !ok() {
            assert!(self.alive(), "the job ended while waiting for {what}");
            assert!(Instant::now() < deadline, "gave up waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        for (pid, _) in children(self.child.id()) {
            sigkill(pid);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The values of every key of `state` in one batch, or the error's status.
fn batch(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    state: &str,
    keys: &[Value],
    consistency: Consistency,
) -> Result<(u64, Vec<Option<Value>>), String> {
    let client = QueryClient::new(addr).unwrap();
    let request = BatchRequest {
        keys: keys.to_vec(),
        consistency,
        ..BatchRequest::default()
    };
    let r = rt
        .block_on(client.batch_json(state, &request))
        .map_err(|e| e.to_string())?;
    assert_eq!(r.values.len(), keys.len());
    for (e, k) in r.values.iter().zip(keys) {
        assert_eq!(&e.key, k, "batch answers keep the request's order");
    }
    Ok((
        r.checkpoint,
        r.values.into_iter().map(|e| e.value).collect(),
    ))
}

/// Whether every key of every state reads as after `rounds` rounds at `addr`.
fn all_equal_model(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    n: u64,
    rounds: u64,
    consistency: Consistency,
) -> bool {
    let ks = keys(n);
    STATES.iter().enumerate().all(|(s, state)| {
        batch(rt, addr, state, &ks, consistency).is_ok_and(|(_, values)| {
            values
                .iter()
                .enumerate()
                .all(|(k, v)| v.as_ref() == Some(&model(k as u64, rounds)[s]))
        })
    })
}

const KEYS: u64 = 300;
const ROUNDS: u64 = 6;

/// Two processes of two workers: each of the three addresses answers every key of
/// every state, point and batch, live and committed; look-ups of keys another
/// process owns are answered by that process.
fn every_process_answers_every_key(backend: &str) {
    let rt = runtime();
    let mut job = Job::start(
        backend,
        2,
        &["--keys", &KEYS.to_string(), "--rounds", &ROUNDS.to_string()],
    );
    let gateway = job.addr();
    job.wait_until("every key's final value, live", || {
        all_equal_model(&rt, &gateway, KEYS, ROUNDS, Consistency::Live)
    });
    // A checkpoint taken after the last record holds the same.
    job.wait_until("every key's final value, committed", || {
        all_equal_model(&rt, &gateway, KEYS, ROUNDS, Consistency::Committed)
    });
    for addr in job.addrs() {
        let client = QueryClient::new(&addr).unwrap();
        let listed: BTreeSet<String> = rt
            .block_on(client.states())
            .unwrap()
            .states
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(listed, STATES.iter().map(|s| s.to_string()).collect());
        let mut answered_by = BTreeSet::new();
        for k in 0..KEYS {
            let key = json!(format!("k{k}"));
            let [totals, _, parity] = model(k, ROUNDS);
            for consistency in [Consistency::Live, Consistency::Committed] {
                let r = rt
                    .block_on(client.lookup("totals", &key, consistency, None))
                    .unwrap()
                    .unwrap();
                assert_eq!(r.value, totals, "{addr}: totals of {key} ({consistency:?})");
                assert_eq!(r.key, key);
                assert_eq!(r.consistency, consistency);
                if consistency == Consistency::Live {
                    answered_by.insert(r.process);
                }
            }
            // One entry of a map state, by user key.
            let even = rt
                .block_on(client.lookup("parity", &key, Consistency::Live, Some(&json!("even"))))
                .unwrap()
                .unwrap();
            assert_eq!(Some(&even.value), parity.get("even"));
            // Typed, with the plain-string form of the key.
            let typed = rt
                .block_on(client.get::<_, (u64, u64)>(
                    "totals",
                    &format!("k{k}"),
                    Consistency::Live,
                ))
                .unwrap()
                .unwrap();
            assert_eq!(json!(typed.value), totals);
        }
        // Keys of both processes were asked here, and each was answered by its owner.
        assert_eq!(answered_by, BTreeSet::from([0, 1]), "{addr}");
        for consistency in [Consistency::Live, Consistency::Committed] {
            assert!(
                all_equal_model(&rt, &addr, KEYS, ROUNDS, consistency),
                "{addr}"
            );
        }
        // A key nobody has: 404 no_value, for live and committed alike.
        for consistency in [Consistency::Live, Consistency::Committed] {
            let none = rt
                .block_on(client.lookup("totals", &json!("nobody"), consistency, None))
                .unwrap();
            assert!(none.is_none());
        }
        // The unmarked state is neither listed nor found.
        let secret = rt.block_on(client.lookup("secret", &json!("k1"), Consistency::Live, None));
        match secret {
            Err(flowstate_query_client::ClientError::Server { status, body }) => {
                assert_eq!((status, body.error.as_str()), (404, "unknown_state"));
            }
            other => panic!("secret state answered {other:?}"),
        }
    }
    assert!(job.alive());
}

#[test]
fn two_processes_answer_every_key_from_every_process_heap() {
    every_process_answers_every_key("heap");
}

#[test]
fn two_processes_answer_every_key_from_every_process_rocksdb() {
    every_process_answers_every_key("rocksdb");
}

/// `committed` answers what the last completed snapshot holds (checked against the
/// state processor's typed read of it) and stays there while `live` moves on. No
/// periodic checkpoint runs (one-hour interval): the only snapshot is a savepoint
/// taken between the two halves of the input.
#[test]
fn committed_stays_at_the_last_checkpoint_while_live_moves_on() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let (keys_n, first, all) = (200u64, 3u64, 8u64);
    let mut job = Job::start(
        "rocksdb",
        1,
        &[
            "--keys",
            &keys_n.to_string(),
            "--rounds",
            &all.to_string(),
            "--first-rounds",
            &first.to_string(),
            "--go",
            go.to_str().unwrap(),
            "--checkpoint-interval",
            "3600000",
        ],
    );
    let addr = job.addr();
    job.wait_until("the first rounds, live", || {
        all_equal_model(&rt, &addr, keys_n, first, Consistency::Live)
    });
    // Nothing completed yet: committed reads have nothing to read.
    let client = QueryClient::new(&addr).unwrap();
    match rt.block_on(client.lookup("totals", &json!("k1"), Consistency::Committed, None)) {
        Err(flowstate_query_client::ClientError::Server { status, body }) => {
            assert_eq!(
                (status, body.error.as_str()),
                (503, "unavailable"),
                "{body:?}"
            );
        }
        other => panic!("committed before any checkpoint: {other:?}"),
    }
    let out = Command::new(env!("CARGO_BIN_EXE_query-job"))
        .arg("savepoint")
        .arg(job.ck())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sp = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let sp_id: u64 = sp
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("sp-")
        .parse()
        .unwrap();
    job.wait_until("the savepoint as the committed state", || {
        batch(&rt, &addr, "totals", &keys(1), Consistency::Committed).is_ok_and(|(c, _)| c == sp_id)
    });
    assert!(all_equal_model(
        &rt,
        &addr,
        keys_n,
        first,
        Consistency::Committed
    ));
    // The committed answers are what the savepoint holds, read offline.
    let snapshot = flowstate_state_processor::Snapshot::open(&sp).unwrap();
    let stored =
        flowstate_state_processor::read_values::<String, (u64, u64)>(&snapshot, "keep", "totals")
            .unwrap();
    let stored: std::collections::HashMap<String, (u64, u64)> = stored.into_iter().collect();
    let (checkpoint, committed) =
        batch(&rt, &addr, "totals", &keys(keys_n), Consistency::Committed).unwrap();
    assert_eq!(checkpoint, sp_id);
    assert_eq!(stored.len(), keys_n as usize);
    for (k, v) in keys(keys_n).iter().zip(&committed) {
        let (n, sum) = stored[k.as_str().unwrap()];
        assert_eq!(v.as_ref(), Some(&json!([n, sum])));
    }
    std::fs::write(&go, b"").unwrap();
    job.wait_until("the last rounds, live", || {
        all_equal_model(&rt, &addr, keys_n, all, Consistency::Live)
    });
    // Live has moved on; committed has not (no checkpoint since the savepoint).
    let (checkpoint, still) =
        batch(&rt, &addr, "totals", &keys(keys_n), Consistency::Committed).unwrap();
    assert_eq!((checkpoint, &still), (sp_id, &committed));
    let (live_checkpoint, _) =
        batch(&rt, &addr, "totals", &keys(keys_n), Consistency::Live).unwrap();
    assert_eq!(
        live_checkpoint, sp_id,
        "live names the newest snapshot it builds on"
    );
    assert!(job.alive());
}

/// One process SIGKILLed while clients ask: the gateway answers 503 (with
/// `Retry-After`) or the right value, never another; after the restart every key
/// reads right again. (A process's own address may also refuse connections while
/// that process is down; the gateway's never does.)
#[test]
fn a_killed_process_gives_503_or_right_values_never_wrong_ones() {
    let rt = runtime();
    let (keys_n, rounds) = (200u64, 5u64);
    let mut job = Job::start(
        "heap",
        2,
        &[
            "--keys",
            &keys_n.to_string(),
            "--rounds",
            &rounds.to_string(),
        ],
    );
    let gateway = job.addr();
    job.wait_until("the final values, committed", || {
        all_equal_model(&rt, &gateway, keys_n, rounds, Consistency::Committed)
    });
    let supervisor = job.child.id();
    let victim = children(supervisor)
        .into_iter()
        .find(|(_, i)| *i == Some(1))
        .map(|(pid, _)| pid)
        .unwrap();
    let http = reqwest::Client::new();
    let (mut ok, mut unavailable) = (0, 0);
    let mut check = |k: u64| {
        let url = format!("http://{gateway}/v1/states/totals/keys/k{k}");
        let r = rt.block_on(async { http.get(&url).send().await });
        let Ok(r) = r else {
            panic!("the gateway refused a connection");
        };
        let status = r.status().as_u16();
        let retry = r.headers().get("retry-after").is_some();
        let body: Value = rt.block_on(r.json()).unwrap();
        match status {
            200 => {
                assert_eq!(
                    body["value"],
                    model(k, rounds)[0],
                    "k{k} during the restart"
                );
                ok += 1;
            }
            503 => {
                assert!(retry, "503 without Retry-After: {body}");
                assert_eq!(body["error"], "unavailable");
                unavailable += 1;
            }
            other => panic!("k{k}: {other} {body}"),
        }
    };
    for k in 0..20 {
        check(k);
    }
    sigkill(victim);
    // Until both processes run again (a new process 1, answering).
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut k = 0;
    loop {
        check(k % keys_n);
        k += 1;
        let back = children(supervisor)
            .iter()
            .any(|(pid, i)| *i == Some(1) && *pid != victim);
        if back && all_equal_model(&rt, &gateway, keys_n, rounds, Consistency::Live) {
            break;
        }
        assert!(Instant::now() < deadline, "the job did not come back");
        assert!(job.alive(), "the supervisor gave up");
    }
    for k in 0..keys_n {
        check(k);
    }
    eprintln!("during the restart: {ok} right values, {unavailable} times 503");
    for addr in job.addrs() {
        assert!(
            all_equal_model(&rt, &addr, keys_n, rounds, Consistency::Live),
            "{addr}"
        );
    }
}

/// The catalogue of bad requests: each gets its 4xx and JSON error code, and the
/// job goes on answering right values; window state is read by window.
#[test]
fn bad_requests_get_4xx_and_leave_the_job_alone() {
    let rt = runtime();
    let (keys_n, rounds) = (50u64, 4u64);
    let mut job = Job::start(
        "heap",
        1,
        &[
            "--keys",
            &keys_n.to_string(),
            "--rounds",
            &rounds.to_string(),
            "--window-ms",
            "200",
        ],
    );
    let addr = job.addr();
    job.wait_until("the final values", || {
        all_equal_model(&rt, &addr, keys_n, rounds, Consistency::Live)
    });
    let http = reqwest::Client::new();
    let base = format!("http://{addr}/v1/states");
    let get = |path: &str| {
        rt.block_on(async {
            let r = http.get(format!("{base}{path}")).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        })
    };
    let post = |path: &str, content_type: Option<&str>, body: Vec<u8>| {
        rt.block_on(async {
            let mut req = http.post(format!("{base}{path}")).body(body);
            if let Some(ct) = content_type {
                req = req.header("content-type", ct);
            }
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        })
    };
    let json_body = |v: Value| serde_json::to_vec(&v).unwrap();
    let too_many: Vec<Value> = (0..10_001).map(|i| json!(format!("k{i}"))).collect();
    let cases: Vec<(&str, (u16, Value), u16, &str)> = vec![
        ("unknown state", get("/nope/keys/k1"), 404, "unknown_state"),
        (
            "unmarked state",
            get("/secret/keys/k1"),
            404,
            "unknown_state",
        ),
        (
            "malformed key",
            get("/totals/keys/%5B1,2%5D"),
            400,
            "bad_key",
        ),
        ("no value", get("/totals/keys/nobody"), 404, "no_value"),
        (
            "bad consistency",
            get("/totals/keys/k1?consistency=eventual"),
            400,
            "bad_request",
        ),
        (
            "unknown parameter",
            get("/totals/keys/k1?colour=red"),
            400,
            "bad_request",
        ),
        (
            "user key on a value state",
            get("/totals/keys/k1?user_key=even"),
            400,
            "bad_request",
        ),
        (
            "unknown endpoint",
            get("/totals/everything"),
            404,
            "not_found",
        ),
        (
            "batch without content type",
            post("/totals/batch", None, json_body(json!({"keys": ["k1"]}))),
            415,
            "unsupported_media_type",
        ),
        (
            "batch as text",
            post(
                "/totals/batch",
                Some("text/plain"),
                json_body(json!({"keys": ["k1"]})),
            ),
            415,
            "unsupported_media_type",
        ),
        (
            "malformed body",
            post(
                "/totals/batch",
                Some("application/json"),
                b"{\"keys\": [".to_vec(),
            ),
            400,
            "bad_request",
        ),
        (
            "unknown field",
            post(
                "/totals/batch",
                Some("application/json"),
                json_body(json!({"keys": [], "when": 1})),
            ),
            400,
            "bad_request",
        ),
        (
            "malformed key in a batch",
            post(
                "/totals/batch",
                Some("application/json"),
                json_body(json!({"keys": ["k1", {"a": 1}]})),
            ),
            400,
            "bad_key",
        ),
        (
            "oversized batch",
            post(
                "/totals/batch",
                Some("application/json"),
                json_body(json!({ "keys": too_many })),
            ),
            413,
            "batch_too_large",
        ),
        (
            "oversized body",
            post(
                "/totals/batch",
                Some("application/json"),
                vec![b' '; 5 << 20],
            ),
            413,
            "batch_too_large",
        ),
        (
            "batch of an unknown state",
            post(
                "/nope/batch",
                Some("application/json"),
                json_body(json!({"keys": ["k1"]})),
            ),
            404,
            "unknown_state",
        ),
        (
            "window state without a window",
            get("/window_sums/keys/k1"),
            400,
            "bad_request",
        ),
        (
            "a window for state that has none",
            get("/totals/keys/k1?namespace=%7B%22start%22:0,%22end%22:200%7D"),
            400,
            "bad_request",
        ),
        (
            "a window that is not JSON",
            get("/window_sums/keys/k1?namespace=soon"),
            400,
            "bad_request",
        ),
        (
            "a window of the wrong shape",
            get("/window_sums/keys/k1?namespace=%7B%22a%22:1%7D"),
            400,
            "bad_key",
        ),
        (
            "wrong method",
            post("/totals/keys/k1", Some("application/json"), Vec::new()),
            405,
            "method_not_allowed",
        ),
    ];
    for (what, (status, body), want_status, want_code) in cases {
        assert_eq!(status, want_status, "{what}: {body}");
        assert_eq!(body["error"], want_code, "{what}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
    }
    // Window state by window: rounds 0 and 1 fell in [0, 200), which fired and was
    // purged; rounds 2 and 3 are in [200, 400), still open (the watermark is 299).
    let client = QueryClient::new(&addr).unwrap();
    let open = json!({"start": 200, "end": 400});
    let gone = json!({"start": 0, "end": 200});
    let listed = rt.block_on(client.states()).unwrap().states;
    let windows = listed.iter().find(|s| s.name == "window_sums").unwrap();
    assert_eq!(windows.namespace_type.as_deref(), Some("TimeWindow"));
    assert_eq!(windows.kind, "window-reduce");
    job.wait_until("a checkpoint holding the open windows", || {
        (0..keys_n).all(|k| {
            let key = json!(format!("k{k}"));
            let sum = (2..4).map(|r| (k * 31 + r * 7) % 100).sum::<u64>();
            [Consistency::Live, Consistency::Committed].iter().all(|c| {
                rt.block_on(client.lookup_window("window_sums", &key, &open, *c))
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.value == json!([format!("k{k}"), sum]))
            })
        })
    });
    for c in [Consistency::Live, Consistency::Committed] {
        let fired = rt
            .block_on(client.lookup_window("window_sums", &json!("k1"), &gone, c))
            .unwrap();
        assert!(fired.is_none(), "{c:?}: {fired:?}");
    }
    // The job never noticed.
    assert!(job.alive());
    assert!(all_equal_model(
        &rt,
        &addr,
        keys_n,
        rounds,
        Consistency::Live
    ));
    let empty = post(
        "/totals/batch",
        Some("application/json; charset=utf-8"),
        json_body(json!({"keys": []})),
    );
    assert_eq!(empty.0, 200, "{}", empty.1);
}

/// Threads of the job: its process and every process under it.
fn threads_of(pid: u32) -> usize {
    let count = |p: u32| std::fs::read_dir(format!("/proc/{p}/task")).map_or(0, |d| d.count());
    count(pid)
        + children(pid)
            .into_iter()
            .map(|(p, _)| count(p))
            .sum::<usize>()
}

/// `n` look-ups of `k<i mod 200>` sent at once (each on a connection of its own):
/// each answer's status, `Retry-After` header and body.
fn flood(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    n: usize,
    consistency: &str,
) -> Vec<(u16, Option<String>, Value, usize)> {
    let http = reqwest::Client::new();
    let requests = (0..n).map(|i| {
        let url = format!(
            "http://{addr}/v1/states/totals/keys/k{}?consistency={consistency}",
            i % 200
        );
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (status, retry, r.json::<Value>().await.unwrap(), i % 200)
        }
    });
    rt.block_on(futures_util::future::join_all(requests))
}

/// A burst of look-ups far beyond what the server answers at once, the committed ones
/// arriving while the first checkpoint is being opened (a native RocksDB checkpoint is
/// converted, which takes a while): every answer is the right value or a 503 with
/// `Retry-After`; the job's threads stay bounded (each waiting committed read used to
/// hold a thread, and each waiting request a file descriptor the job needs); the job
/// keeps running and then answers every key right.
#[test]
fn a_burst_of_lookups_is_shed_with_503_and_leaves_the_job_alone() {
    let rt = runtime();
    let (keys_n, rounds) = (200u64, 4u64);
    let mut job = Job::start(
        "rocksdb",
        1,
        &[
            "--keys",
            &keys_n.to_string(),
            "--rounds",
            &rounds.to_string(),
            "--checkpoint-interval",
            "300",
        ],
    );
    let addr = job.addr();
    job.wait_until("the final values, live", || {
        all_equal_model(&rt, &addr, keys_n, rounds, Consistency::Live)
    });
    // A checkpoint begun after the final values were live, on disk; no committed read
    // has opened any checkpoint yet.
    let ck = job.ck();
    let newest = || {
        std::fs::read_dir(&ck).map_or(0, |d| {
            d.flatten()
                .filter(|e| e.path().join("_metadata").exists())
                .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse().ok())
                .max()
                .unwrap_or(0u64)
        })
    };
    let then = newest();
    job.wait_until("a checkpoint after the last round", || newest() >= then + 2);
    let pid = job.child.id();
    let before = threads_of(pid);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut most = 0;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                most = most.max(threads_of(pid));
                std::thread::sleep(Duration::from_millis(2));
            }
            most
        })
    };
    let mut answers = flood(&rt, &addr, 400, "committed");
    answers.extend(flood(&rt, &addr, 600, "live"));
    stop.store(true, std::sync::atomic::Ordering::Release);
    let most = sampler.join().unwrap();
    let (mut right, mut shed) = (0, 0);
    for (status, retry, body, k) in &answers {
        match status {
            200 => {
                assert_eq!(body["value"], model(*k as u64, rounds)[0], "{body}");
                right += 1;
            }
            503 => {
                assert_eq!(body["error"], "unavailable", "{body}");
                assert!(retry.is_some(), "a 503 without Retry-After: {body}");
                shed += 1;
            }
            other => panic!("status {other}: {body}"),
        }
    }
    assert!(right > 0, "nothing answered ({shed} shed)");
    assert!(
        most < before + 64,
        "the job went from {before} to {most} threads under the burst"
    );
    assert!(job.alive(), "the burst ended the job");
    job.wait_until("every key right, committed", || {
        all_equal_model(&rt, &addr, keys_n, rounds, Consistency::Committed)
    });
    assert!(all_equal_model(
        &rt,
        &addr,
        keys_n,
        rounds,
        Consistency::Live
    ));
}
