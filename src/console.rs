//! The console: one server-rendered HTML page at `/` on the admin port, readable without JavaScript and
//! with no external asset. Per source: requests by outcome over the last hour, refusal reasons, the dedup
//! hit ratio, the queue (depth, dead letters and their last errors) and the quarantine (kept requests and
//! their reasons). Its figures are the ones `/metrics` shows: the page is rendered from the same registry.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::forward::queue::DeadLetter;
use crate::quarantine::Entry;

/// One sample of a counter, `name{labels} value`, as the Prometheus text shows it.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Reads the samples of a Prometheus text exposition (comments and unparsable lines are skipped).
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.trim().parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
                None => (series, BTreeMap::new()),
            };
            Some(Sample {
                name: name.to_owned(),
                labels,
                value,
            })
        })
        .collect()
}

/// `a="x",b="y"` into a map; label values are unescaped (`\"`, `\\`, `\n`).
fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.insert(name.trim_start_matches(',').to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

/// A counter's value per (source, label) pair, from one exposition.
type Counts = BTreeMap<(String, String), f64>;

fn counts(samples: &[Sample], name: &str, label: &str) -> Counts {
    let mut out = Counts::new();
    for sample in samples.iter().filter(|s| s.name == name) {
        if let (Some(source), Some(value)) = (sample.labels.get("source"), sample.labels.get(label)) {
            *out.entry((source.clone(), value.clone())).or_default() += sample.value;
        }
    }
    out
}

/// The counts of requests by outcome seen over the last hour, from which the page shows the hour's
/// figures: the current counts minus the oldest sample within the hour (the process's whole life when it
/// is younger).
#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<VecDeque<(Instant, Counts)>>,
}

const HOUR: Duration = Duration::from_secs(3600);
/// Samples are kept at most this often: 60 an hour.
const SAMPLE_EVERY: Duration = Duration::from_secs(60);

impl History {
    /// Records `now`'s counts (at most once a minute) and returns the counts of the last hour.
    fn hour(&self, current: &Counts, now: Instant) -> Counts {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        while samples.front().is_some_and(|(at, _)| now.duration_since(*at) > HOUR) {
            samples.pop_front();
        }
        if samples
            .back()
            .is_none_or(|(at, _)| now.duration_since(*at) >= SAMPLE_EVERY)
        {
            samples.push_back((now, current.clone()));
        }
        let Some((_, oldest)) = samples.front().filter(|(at, _)| *at < now) else {
            return current.clone();
        };
        current
            .iter()
            .map(|(key, value)| (key.clone(), value - oldest.get(key).copied().unwrap_or(0.0)))
            .collect()
    }
}

/// What the page shows of one queued source.
#[derive(Debug)]
pub struct QueueView {
    /// Undelivered entries.
    pub depth: u64,
    /// Its dead letters (or the error reading them).
    pub dead: Result<Vec<DeadLetter>, String>,
}

/// What the page shows of one quarantining source.
#[derive(Debug)]
pub struct QuarantineView {
    /// Its kept requests (or the error reading them).
    pub entries: Result<Vec<Entry>, String>,
}

/// Everything one page shows, gathered by the admin listener.
#[derive(Debug, Default)]
pub struct Page {
    /// The sources of the config now serving, in config order.
    pub sources: Vec<String>,
    /// The queues, by source.
    pub queues: BTreeMap<String, QueueView>,
    /// The quarantines, by source.
    pub quarantines: BTreeMap<String, QuarantineView>,
    /// With `admin.allow_actions`: the CSRF token the replay forms carry. Without, the buttons are shown
    /// disabled.
    pub actions: Option<String>,
}

/// A replay button: a POST form with the source, the entry's id and the CSRF token; disabled when actions
/// are off.
fn replay_button(html: &mut String, action: &str, source: &str, id: &str, csrf: Option<&str>) {
    let disabled = if csrf.is_some() {
        ""
    } else {
        " disabled title=\"admin.allow_actions is off\""
    };
    let _ = write!(
        html,
        "<form method=\"post\" action=\"{action}\"><input type=\"hidden\" name=\"source\" value=\"{}\">\
         <input type=\"hidden\" name=\"id\" value=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button type=\"submit\" class=\"replay\"{disabled}>Replay</button></form>",
        esc(source),
        esc(id),
        esc(csrf.unwrap_or(""))
    );
}

/// Escapes text for HTML.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

/// Writes a whole number the way `/metrics` counts it.
fn n(value: f64) -> String {
    format!("{value:.0}")
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.4em 0 1em}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}\
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#777}";

impl Page {
    /// The HTML page, from `metrics` (the Prometheus text of this process) and `history`.
    pub fn render(&self, metrics: &str, history: &History, now: Instant) -> String {
        let samples = parse(metrics);
        let outcomes = counts(&samples, crate::metrics::REQUESTS_TOTAL, "outcome");
        let hour = history.hour(&outcomes, now);
        let reasons = counts(&samples, crate::metrics::REJECTIONS_TOTAL, "reason");
        let dedup = counts(&samples, crate::metrics::DEDUP_TOTAL, "result");
        let mut html = String::new();
        let _ = write!(
            html,
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>hookgate console</title>\
             <style>{STYLE}</style></head><body><h1>hookgate console</h1>\
             <p class=\"muted\">Requests over the last hour (or since start, if sooner); the other figures \
             are since start, as <a href=\"/metrics\">/metrics</a> counts them.</p>"
        );
        for source in &self.sources {
            let _ = write!(html, "<section id=\"source-{0}\"><h2>{0}</h2>", esc(source));
            let of = |table: &Counts| -> Vec<(String, f64)> {
                table
                    .iter()
                    .filter(|((s, _), v)| s == source && **v > 0.0)
                    .map(|((_, label), v)| (label.clone(), *v))
                    .collect()
            };
            table(&mut html, "requests", "outcome", "last hour", &of(&hour));
            table(&mut html, "refusals", "reason", "since start", &of(&reasons));
            let claimed = dedup
                .get(&(source.clone(), "claimed".to_owned()))
                .copied()
                .unwrap_or(0.0);
            let duplicate = dedup
                .get(&(source.clone(), "duplicate".to_owned()))
                .copied()
                .unwrap_or(0.0);
            let ratio = if claimed + duplicate > 0.0 {
                format!("{:.1} %", 100.0 * duplicate / (claimed + duplicate))
            } else {
                "no events yet".to_owned()
            };
            let _ = write!(
                html,
                "<p>Dedup hit ratio: <span class=\"dedup-ratio\">{ratio}</span> ({} duplicates, {} claims)</p>",
                n(duplicate),
                n(claimed)
            );
            let csrf = self.actions.as_deref();
            if let Some(queue) = self.queues.get(source) {
                dead_letters(&mut html, source, queue, csrf);
            }
            if let Some(quarantine) = self.quarantines.get(source) {
                quarantined(&mut html, source, quarantine, csrf);
            }
            html.push_str("</section>");
        }
        html.push_str("</body></html>\n");
        html
    }
}

fn table(html: &mut String, class: &str, what: &str, column: &str, rows: &[(String, f64)]) {
    if rows.is_empty() {
        let _ = write!(html, "<p class=\"{class} muted\">No {class} yet.</p>");
        return;
    }
    let _ = write!(
        html,
        "<table class=\"{class}\"><tr><th>{what}</th><th>{column}</th></tr>"
    );
    for (label, value) in rows {
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"num\" data-{class}=\"{}\">{}</td></tr>",
            esc(label),
            esc(label),
            n(*value)
        );
    }
    html.push_str("</table>");
}

fn dead_letters(html: &mut String, source: &str, queue: &QueueView, csrf: Option<&str>) {
    let _ = write!(
        html,
        "<p>Queue depth: <span class=\"queue-depth\">{}</span></p>",
        queue.depth
    );
    match &queue.dead {
        Err(error) => {
            let _ = write!(
                html,
                "<p class=\"muted\">Dead letters cannot be read: {}</p>",
                esc(error)
            );
        }
        Ok(letters) if letters.is_empty() => html.push_str("<p class=\"dead muted\">No dead letters.</p>"),
        Ok(letters) => {
            html.push_str(
                "<table class=\"dead\"><tr><th>event id</th><th>attempts</th><th>last error</th><th></th></tr>",
            );
            for letter in letters {
                let _ = write!(
                    html,
                    "<tr><td class=\"event-id\">{}</td><td class=\"num\">{}</td><td>{}</td><td>",
                    esc(&letter.event_id),
                    letter.attempts,
                    esc(letter.last_error.as_deref().unwrap_or(if letter.unreadable {
                        "unreadable entry"
                    } else {
                        "-"
                    }))
                );
                if !letter.unreadable {
                    replay_button(html, "/actions/dead/replay", source, &letter.entry_id, csrf);
                }
                html.push_str("</td></tr>");
            }
            html.push_str("</table>");
        }
    }
}

fn quarantined(html: &mut String, source: &str, quarantine: &QuarantineView, csrf: Option<&str>) {
    match &quarantine.entries {
        Err(error) => {
            let _ = write!(
                html,
                "<p class=\"muted\">The quarantine cannot be read: {}</p>",
                esc(error)
            );
        }
        Ok(entries) if entries.is_empty() => html.push_str("<p class=\"quarantine muted\">Quarantine empty.</p>"),
        Ok(entries) => {
            html.push_str(
                "<table class=\"quarantine\"><tr><th>id</th><th>client</th><th>verdict</th><th>reason</th>\
                 <th>bytes</th><th></th></tr>",
            );
            for entry in entries {
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>",
                    esc(&entry.id),
                    esc(&entry.client_ip),
                    esc(&entry.verdict),
                    esc(&entry.reason),
                    entry.size()
                );
                replay_button(html, "/actions/quarantine/replay", source, &entry.id, csrf);
                html.push_str("</td></tr>");
            }
            html.push_str("</table>");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE hookgate_requests_total counter\n\
        hookgate_requests_total{source=\"gh\",outcome=\"forwarded\"} 5\n\
        hookgate_requests_total{source=\"gh\",outcome=\"bad_signature\"} 2\n\
        hookgate_requests_total{source=\"other\",outcome=\"forwarded\"} 9\n\
        hookgate_rejections_total{source=\"gh\",reason=\"bad_signature:mismatch\"} 2\n\
        hookgate_dedup_total{source=\"gh\",result=\"claimed\"} 3\n\
        hookgate_dedup_total{source=\"gh\",result=\"duplicate\"} 1\n";

    #[test]
    fn labels_with_escapes_are_read() {
        let samples = parse("m{a=\"x\\\"y\",b=\"<b>\"} 2\nbare 1\n# comment\n");
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].labels["a"], "x\"y");
        assert_eq!(samples[0].labels["b"], "<b>");
        assert_eq!(samples[1].value, 1.0);
    }

    #[test]
    fn the_page_shows_each_sources_figures_escaped() {
        let page = Page {
            sources: vec!["gh".to_owned(), "<x>".to_owned()],
            ..Page::default()
        };
        let html = page.render(TEXT, &History::default(), Instant::now());
        assert!(html.contains("data-requests=\"forwarded\">5<"), "{html}");
        assert!(html.contains("data-refusals=\"bad_signature:mismatch\">2<"), "{html}");
        assert!(html.contains("25.0 %"), "one duplicate in four: {html}");
        assert!(html.contains("&lt;x&gt;") && !html.contains("<x>"), "{html}");
        assert!(!html.contains(">9<"), "another source's figures stay out of gh's table");
    }

    #[test]
    fn the_hour_subtracts_the_oldest_sample_within_it() {
        let history = History::default();
        let t0 = Instant::now();
        let key = ("gh".to_owned(), "forwarded".to_owned());
        let at = |v: f64| Counts::from([(key.clone(), v)]);
        assert_eq!(
            history.hour(&at(10.0), t0)[&key],
            10.0,
            "the first sample: everything so far"
        );
        assert_eq!(history.hour(&at(25.0), t0 + Duration::from_secs(600))[&key], 15.0);
        // Past the hour, the samples older than it are dropped.
        let later = t0 + Duration::from_secs(3700);
        assert_eq!(history.hour(&at(40.0), later)[&key], 15.0, "since the sample at 10 min");
    }
}
