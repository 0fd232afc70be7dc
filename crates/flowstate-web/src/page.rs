//! The history page: one self-contained HTML document (no scripts, no external
//! files) with the job's operators, charts of checkpoint durations and sizes over
//! time (inline SVG), and the checkpoint history table, newest first. Every history
//! row carries its id (`data-id`) so tools and tests can read the page back.

use std::fmt::Write;

use flowstate_core::checkpoint_history::SnapshotSummary;
use flowstate_core::checkpoint_metadata::SnapshotKind;

use crate::history::HistoryView;

/// What the page says about the job besides its history.
#[derive(Clone, Debug)]
pub struct JobInfo {
    /// The job's name (its binary's).
    pub name: String,
    /// `running` or `stopped`.
    pub status: String,
    /// The checkpoint directory as the user named it.
    pub location: String,
    /// Seconds between reloads of a running job's page (`None`: never).
    pub refresh_secs: Option<u32>,
}

/// `YYYY-MM-DD hh:mm:ss` (UTC) of a Unix time in milliseconds.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Text made safe for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `1234567` as `1,234,567`.
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

/// Bytes for people (`12.3 MiB`).
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:24px;color:#1d2430;background:#fafbfc}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}\
.meta{color:#5a6475;font-size:13px}.status{font-weight:600}\
.running{color:#1a7f37}.stopped{color:#6e7781}\
table{border-collapse:collapse;font-size:13px;background:#fff}\
th,td{border:1px solid #d8dee4;padding:4px 8px;text-align:right}\
th{background:#f0f3f6}td.l,th.l{text-align:left}\
.charts{display:flex;gap:24px;flex-wrap:wrap}\
figure{margin:0;background:#fff;border:1px solid #d8dee4;padding:8px}\
figcaption{font-size:13px;font-weight:600;margin-bottom:4px}";

/// A line chart of `series` (each `(label, colour, values)`) over the snapshots.
fn chart(title: &str, ids: &[u64], series: &[(&str, &str, Vec<f64>)], unit: &str) -> String {
    const W: f64 = 560.0;
    const H: f64 = 200.0;
    const PAD: f64 = 40.0;
    let max = series
        .iter()
        .flat_map(|(_, _, v)| v.iter().copied())
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let n = ids.len();
    let x = |i: usize| {
        if n <= 1 {
            PAD + (W - 2.0 * PAD) / 2.0
        } else {
            PAD + (W - 2.0 * PAD) * i as f64 / (n - 1) as f64
        }
    };
    let y = |v: f64| H - PAD + 10.0 - (H - PAD) * v / max;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<figure><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" \
         width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{}\">",
        esc(title),
        esc(title)
    );
    let _ = write!(
        svg,
        "<line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#8c959f\"/>\
         <line x1=\"{PAD}\" y1=\"10\" x2=\"{PAD}\" y2=\"{b}\" stroke=\"#8c959f\"/>\
         <text x=\"{t}\" y=\"18\" font-size=\"11\" text-anchor=\"end\">{}</text>\
         <text x=\"{t}\" y=\"{b}\" font-size=\"11\" text-anchor=\"end\">0</text>",
        esc(&format!("{max:.0} {unit}")),
        b = H - PAD + 10.0,
        r = W - PAD,
        t = PAD - 4.0,
    );
    if let (Some(first), Some(last)) = (ids.first(), ids.last()) {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{first}</text>\
             <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{last}</text>",
            x(0),
            H - PAD + 26.0,
            x(n - 1),
            H - PAD + 26.0
        );
    }
    for (k, (label, colour, values)) in series.iter().enumerate() {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            points.join(" ")
        );
        for p in &points {
            let (px, py) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(
                svg,
                "<circle cx=\"{px}\" cy=\"{py}\" r=\"2.5\" fill=\"{colour}\"/>"
            );
        }
        let _ = write!(
            svg,
            "<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{colour}\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text>",
            PAD + 10.0 + 150.0 * k as f64,
            H - 12.0,
            PAD + 24.0 + 150.0 * k as f64,
            H - 3.0,
            esc(label)
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

fn kind(s: &SnapshotSummary) -> &'static str {
    match s.kind {
        SnapshotKind::Checkpoint => "checkpoint",
        _ => "savepoint",
    }
}

/// The page of `job` with `view`'s history.
pub fn render(job: &JobInfo, view: &HistoryView) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{name} · Flowstate</title>{refresh}<style>{STYLE}</style></head><body>\
         <h1>{name}</h1><div class=\"meta\">status <span class=\"status {status}\" \
         id=\"status\">{status}</span> · checkpoints in <code>{loc}</code> · {n} in the \
         history, {r} restorable now{bad}</div>",
        name = esc(&job.name),
        refresh = job
            .refresh_secs
            .map(|s| format!("<meta http-equiv=\"refresh\" content=\"{s}\">"))
            .unwrap_or_default(),
        status = esc(&job.status),
        loc = esc(&job.location),
        n = view.snapshots.len(),
        r = view.retained.len(),
        bad = if view.unreadable > 0 {
            format!(" · {} unreadable entries skipped", view.unreadable)
        } else {
            String::new()
        },
    );
    h.push_str("<h2>Operators</h2>");
    match view.newest() {
        None => h.push_str("<p class=\"meta\">No checkpoint has completed yet.</p>"),
        Some(newest) => {
            let _ = write!(
                h,
                "<p class=\"meta\">as of {} {} · parallelism {}</p><table id=\"operators\">\
                 <tr><th class=\"l\">operator</th><th>parallelism</th><th>state size</th>\
                 <th>written</th><th>sync ms</th><th>async ms</th><th>alignment ms</th></tr>",
                kind(newest),
                newest.id,
                newest.parallelism
            );
            for (uid, o) in &newest.operators {
                let _ = write!(
                    h,
                    "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td>\
                     <td>{:.1}</td><td>{:.1}</td><td>{:.1}</td></tr>",
                    esc(uid),
                    o.instances,
                    human(o.full_size),
                    human(o.uploaded_size),
                    o.sync_ms,
                    o.async_ms,
                    o.alignment_ms
                );
            }
            h.push_str("</table>");
        }
    }
    let ids: Vec<u64> = view.snapshots.iter().map(|s| s.id).collect();
    if !ids.is_empty() {
        h.push_str("<h2>Over time</h2><div class=\"charts\">");
        let durations = [
            (
                "duration",
                "#0969da",
                view.snapshots
                    .iter()
                    .map(|s| s.duration_ms as f64)
                    .collect(),
            ),
            (
                "alignment",
                "#bf8700",
                view.snapshots.iter().map(|s| s.alignment_ms).collect(),
            ),
        ];
        h.push_str(&chart("Checkpoint duration (ms)", &ids, &durations, "ms"));
        let kib = |b: u64| b as f64 / 1024.0;
        let sizes = [
            (
                "full size",
                "#1a7f37",
                view.snapshots.iter().map(|s| kib(s.full_size)).collect(),
            ),
            (
                "written",
                "#cf222e",
                view.snapshots
                    .iter()
                    .map(|s| kib(s.uploaded_size))
                    .collect(),
            ),
        ];
        h.push_str(&chart("Checkpoint size (KiB)", &ids, &sizes, "KiB"));
        h.push_str("</div>");
    }
    h.push_str(
        "<h2>Checkpoint history</h2><table id=\"history\"><tr><th>id</th><th class=\"l\">kind\
         </th><th class=\"l\">triggered (UTC)</th><th>duration ms</th><th>alignment ms</th>\
         <th>in-flight bytes</th><th>full size</th><th>written</th><th>parallelism</th>\
         <th class=\"l\">state per operator</th></tr>",
    );
    for s in view.snapshots.iter().rev() {
        let ops: Vec<String> = s
            .operators
            .iter()
            .map(|(uid, o)| format!("{}={}", esc(uid), grouped(o.full_size)))
            .collect();
        let _ = write!(
            h,
            "<tr data-id=\"{id}\"><td>{id}{fin}</td><td class=\"l\">{kind}</td>\
             <td class=\"l\">{time}</td><td>{dur}</td><td>{align:.0}</td><td>{infl}</td>\
             <td>{full}</td><td>{up}</td><td>{par}</td><td class=\"l\">{ops}</td></tr>",
            id = s.id,
            fin = if s.finished { " (final)" } else { "" },
            kind = kind(s),
            time = utc(s.triggered_at_ms),
            dur = grouped(s.duration_ms),
            align = s.alignment_ms,
            infl = grouped(s.inflight_bytes),
            full = grouped(s.full_size),
            up = grouped(s.uploaded_size),
            par = s.parallelism,
            ops = ops.join(" "),
        );
    }
    h.push_str("</table></body></html>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_renders_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_798_761_599_000), "2026-12-31 23:59:59");
    }

    #[test]
    fn numbers_and_text_render_safely() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 20), "3.0 MiB");
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn an_empty_history_renders() {
        let job = JobInfo {
            name: "<job>".into(),
            status: "stopped".into(),
            location: "/tmp/ck".into(),
            refresh_secs: None,
        };
        let page = render(&job, &HistoryView::default());
        assert!(page.contains("&lt;job&gt;"));
        assert!(page.contains("No checkpoint has completed yet."));
        assert!(!page.contains("data-id"));
    }
}
