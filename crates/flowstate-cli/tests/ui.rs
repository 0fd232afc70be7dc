//! The checkpoint history page, looked at as a person would: a real run of the
//! `counts` job, then `flowstate ui` on its checkpoint directory, loaded in headless
//! Chromium (Debian's `chromium`, installed by `scripts/setup.sh`). The rendered
//! rows must match the `_metadata` of every retained checkpoint, and the history
//! must reach further back than retention. A running job serves the same page and
//! its Prometheus metrics on its `--query-addr`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowstate_core::checkpoint_metadata::CheckpointMetadata;

mod common;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `chromium` from `PATH` (or `$CHROMIUM`), headless, with a fresh profile.
fn chromium(profile: &Path) -> Command {
    let bin = std::env::var_os("CHROMIUM").unwrap_or_else(|| "chromium".into());
    let mut c = Command::new(bin);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .stdin(Stdio::null())
    .stderr(Stdio::null());
    c
}

/// The page's DOM after Chromium rendered it.
fn rendered_dom(url: &str, profile: &Path) -> String {
    let out = chromium(profile)
        .args(["--dump-dom", url])
        .output()
        .expect("chromium (scripts/setup.sh installs it)");
    assert!(out.status.success(), "chromium --dump-dom failed");
    String::from_utf8(out.stdout).unwrap()
}

/// The cells of the history table's rows, by id, newest first.
fn history_rows(dom: &str) -> Vec<(u64, Vec<String>)> {
    let table = &dom[dom.find("id=\"history\"").expect("history table")..];
    table
        .split("<tr data-id=\"")
        .skip(1)
        .map(|row| {
            let id = row[..row.find('"').unwrap()].parse().unwrap();
            let cells = row
                .split("<td")
                .skip(1)
                .map(|c| {
                    let text = &c[c.find('>').unwrap() + 1..c.find("</td>").unwrap()];
                    text.replace("&amp;", "&")
                })
                .collect();
            (id, cells)
        })
        .collect()
}

fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The complete checkpoints' metadata in `ck`.
fn retained(ck: &Path) -> Vec<CheckpointMetadata> {
    let mut out: Vec<CheckpointMetadata> = std::fs::read_dir(ck)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("chk-"))
        .filter_map(|e| {
            let path = e.path().join("_metadata");
            let bytes = std::fs::read(&path).ok()?;
            Some(CheckpointMetadata::parse(&bytes, &path.display().to_string()).unwrap())
        })
        .collect();
    out.sort_by_key(|m| m.id);
    out
}

#[test]
fn the_history_page_of_a_stopped_job_matches_its_metadata_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    // Unthrottled (about a second): many more checkpoints than the three retained.
    let out = common::job(dir.path(), 2, "rocksdb", 50, 300_000, 0)
        .args(["--retained", "3"])
        .output()
        .unwrap();
    common::assert_success(&out);
    let kept = retained(&ck);
    assert!(!kept.is_empty() && kept.len() <= 3);
    let history_lines = std::fs::read_to_string(ck.join("_history"))
        .unwrap()
        .lines()
        .count();
    assert!(history_lines > kept.len(), "{history_lines} history lines");

    let mut ui = Running(
        Command::new(env!("CARGO_BIN_EXE_flowstate"))
            .arg("ui")
            .arg(&ck)
            .args(["--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    BufReader::new(ui.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_string();

    let profile = dir.path().join("chromium");
    let dom = rendered_dom(&url, &profile);
    assert!(dom.contains("id=\"status\">stopped<"), "{dom}");
    let rows = history_rows(&dom);
    assert_eq!(rows.len(), history_lines, "one row per history line");
    assert!(rows.windows(2).all(|w| w[0].0 > w[1].0), "newest first");
    // Every retained checkpoint's row says what its `_metadata` says.
    for m in &kept {
        let (_, cells) = rows
            .iter()
            .find(|(id, _)| *id == m.id)
            .unwrap_or_else(|| panic!("no row for checkpoint {}", m.id));
        let id_cell = if m.finished {
            format!("{} (final)", m.id)
        } else {
            m.id.to_string()
        };
        assert_eq!(cells[0], id_cell);
        assert_eq!(cells[1], "checkpoint");
        assert_eq!(cells[3], grouped(m.duration_ms), "duration of {}", m.id);
        assert_eq!(
            cells[5],
            grouped(m.inflight_bytes()),
            "in-flight of {}",
            m.id
        );
        assert_eq!(cells[6], grouped(m.full_size()), "full size of {}", m.id);
        assert_eq!(cells[7], grouped(m.uploaded_size()), "written of {}", m.id);
        assert_eq!(cells[8], m.parallelism.to_string());
        for (uid, o) in &m.operators {
            let part = format!("{uid}={}", grouped(o.full_size()));
            assert!(cells[9].contains(&part), "{part} not in {}", cells[9]);
        }
    }
    // The operators of the newest snapshot, with their parallelism.
    let newest = kept.last().unwrap();
    let operators = &dom[dom.find("id=\"operators\"").unwrap()..];
    for (uid, o) in &newest.operators {
        let cell = format!(
            "<td class=\"l\">{uid}</td><td>{}</td>",
            o.keyed.len().max(o.operator.len())
        );
        assert!(operators.contains(&cell), "{cell}");
    }
    assert!(dom.contains("<svg"), "charts");

    // A screenshot of the page, as a person sees it.
    let png = dir.path().join("history.png");
    let status = chromium(&profile)
        .arg(format!("--screenshot={}", png.display()))
        .args(["--window-size=1280,1600", &url])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.len() > 10_000 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
    if let Some(to) = std::env::var_os("FLOWSTATE_SCREENSHOT_TO") {
        std::fs::copy(&png, to).unwrap();
    }
}

/// `GET path` from `addr`, the body.
fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    body.to_string()
}

/// The value of the first sample of `name` (with labels containing `labels`).
fn sample(metrics: &str, name: &str, labels: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(labels)
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn a_running_job_serves_its_page_and_prometheus_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut job = Running(
        common::job(dir.path(), 2, "rocksdb", 50, 60_000, 2)
            .args(["--query-addr", &addr, "--retained", "2"])
            .spawn()
            .unwrap(),
    );
    common::wait_for_checkpoint(&ck, 3, &mut job.0);
    let deadline = Instant::now() + Duration::from_secs(120);
    // The gauges follow `_metadata` by a moment: wait until they show checkpoint 3.
    let metrics = loop {
        let m = http_get(&addr, "/metrics");
        if sample(&m, "flowstate_last_checkpoint_id", "").is_some_and(|id| id >= 3.0) {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint in the metrics:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    for (name, labels) in [
        ("flowstate_records_out_total", "operator=\"source"),
        ("flowstate_records_in_total", "operator=\"counts\""),
        ("flowstate_records_out_total", "operator=\"counts\""),
        ("flowstate_records_in_total", "operator=\"out\""),
        ("flowstate_snapshots_completed_total", "kind=\"checkpoint\""),
        ("flowstate_last_checkpoint_duration_seconds", ""),
        ("flowstate_last_checkpoint_full_size_bytes", ""),
        ("flowstate_state_size_bytes", "operator=\""),
        ("flowstate_rocksdb_memtable_bytes", "worker=\""),
        ("flowstate_rocksdb_estimated_keys", "worker=\""),
    ] {
        let v =
            sample(&metrics, name, labels).unwrap_or_else(|| panic!("{name} missing:\n{metrics}"));
        assert!(v > 0.0 || name.contains("duration"), "{name} = {v}");
    }
    let page = http_get(&addr, "/");
    assert!(page.contains("id=\"status\">running<"));
    assert!(page.contains("<tr data-id=\""));
    let api: serde_json::Value =
        serde_json::from_str(&http_get(&addr, "/api/checkpoints")).unwrap();
    assert!(api["snapshots"].as_array().unwrap().len() >= 3);
    let status = job.0.wait().unwrap();
    assert!(status.success());
}
