//! The status page on the master's HTTP port (:9425), as `mfscgiserv` shows a MooseFS
//! cluster: the group's nodes and the VIP, chunkservers and their disks, the chunk matrix
//! (valid copies against goal, coloured), sessions and operation counts.
//!
//! Rendered here from [`ClusterStatus`] into one self-contained HTML document: no script,
//! no stylesheet or font from elsewhere, so it works on a closed network and in any
//! browser; it reloads itself every [`REFRESH_SECONDS`]. A follower's page says so and links
//! to the leader's. The same data is served as JSON under `/api/...` (see
//! [`mfsha_proto::views`]).

use mfsha_proto::client::{ClusterStatus, MemberKind, CHUNK_MATRIX_SIDE};
use mfsha_proto::views::{self, bytes, percent, CellClass};
use std::fmt::Write as _;

/// How often the page reloads itself.
pub const REFRESH_SECONDS: u32 = 5;

/// What the page shows beside the status.
#[derive(Debug, Clone, Default)]
pub struct PageExtras {
    /// The leader's status page, when this master does not lead and knows where it is.
    pub leader_page: Option<String>,
    /// Client operations served by this master since it started, by name, with their rate
    /// per second since the page was last rendered (`None` the first time).
    pub operations: Vec<(String, u64, Option<f64>)>,
    /// Now, in ms since the Unix epoch (for "since" columns).
    pub now_unix_ms: u64,
}

/// The whole page.
pub fn render(status: &ClusterStatus, extras: &PageExtras) -> String {
    let mut out = String::with_capacity(16 * 1024);
    head(&mut out, status);
    banner(&mut out, status, extras);
    nodes(&mut out, status, extras.now_unix_ms);
    long_work(&mut out, status);
    metadata(&mut out, status);
    servers(&mut out, status);
    disks(&mut out, status);
    matrix(&mut out, status);
    sessions(&mut out, status);
    operations(&mut out, extras);
    out.push_str("</body>\n</html>\n");
    out
}

/// The leader's page address: its client host with this master's HTTP port (every master
/// of an appliance listens on the same HTTP port).
pub fn leader_page(leader_client: Option<&str>, http_port: u16) -> Option<String> {
    let client = leader_client?;
    let host = client.rsplit_once(':').map_or(client, |(host, _)| host);
    Some(format!("http://{host}:{http_port}/"))
}

const STYLE: &str = "body{font-family:sans-serif;margin:1em 2em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.3em 0}td,th{border:1px solid #bbb;padding:2px 8px;\
text-align:right}th{background:#eee}td.l,th.l{text-align:left}.note{background:#ffe9a8;\
padding:.5em;border:1px solid #d9b54a}.missing{background:#f4a6a6}.endangered{background:#f7c28b}\
.undergoal{background:#fae49b}.stable{background:#b9e3b0}.overgoal{background:#a9c8f0}\
.deleted{background:#ddd}.bad{color:#b00;font-weight:bold}";

fn head(out: &mut String, s: &ClusterStatus) {
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\n\
         <title>mfsha {} — node {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(&s.cluster_id),
        s.node_id
    );
}

fn banner(out: &mut String, s: &ClusterStatus, extras: &PageExtras) {
    let _ = writeln!(
        out,
        "<h1>mfsha {} · cluster <span id=\"cluster\">{}</span></h1>",
        env!("CARGO_PKG_VERSION"),
        esc(&s.cluster_id)
    );
    let _ = writeln!(
        out,
        "<p id=\"self\">This is node {} ({}) in term {}; raft commit index {}, applied {}.</p>",
        s.node_id,
        esc(&s.role),
        s.term,
        s.commit_index,
        s.applied_index
    );
    if s.role == "leader" {
        return;
    }
    let leader = match (s.leader_id, &extras.leader_page) {
        (0, _) => "No leader is known: an election may be running.".to_string(),
        (id, Some(page)) => format!(
            "Node {id} leads: its <a id=\"leader-link\" href=\"{}\">status page</a> shows the \
             whole cluster.",
            esc(page)
        ),
        (id, None) => format!("Node {id} leads."),
    };
    let _ = writeln!(
        out,
        "<p class=\"note\" id=\"follower-note\">This master does not lead: what follows is its \
         own view. {leader}</p>"
    );
}

fn nodes(out: &mut String, s: &ClusterStatus, now_ms: u64) {
    out.push_str("<h2>Nodes</h2>\n");
    if s.members.is_empty() {
        out.push_str("<p>Only the leader tracks the members.</p>\n");
    } else {
        let own = s.members.iter().find(|m| m.id == s.node_id).map_or(0, |m| m.matched);
        table_head(out, "nodes", &["node", "kind", "log index", "lag", "last contact", "client"]);
        for m in &s.members {
            let contact = match (m.id == s.node_id, m.last_contact_ms) {
                (true, _) => "itself (leader)".to_string(),
                (false, Some(ms)) => format!("{ms} ms ago"),
                (false, None) => "not yet".to_string(),
            };
            row(
                out,
                &[
                    m.id.to_string(),
                    kind(m.kind).into(),
                    m.matched.to_string(),
                    own.saturating_sub(m.matched).to_string(),
                    contact,
                    m.client.clone().unwrap_or_else(|| "-".into()),
                ],
            );
        }
        out.push_str("</table>\n");
    }
    let Some(vip) = &s.vip else { return };
    let holder = if vip.held { "this master holds it" } else { "this master does not hold it" };
    let announced = vip
        .last_announcement_unix_ms
        .map_or("never".into(), |t| format!("{:.1} s ago", now_ms.saturating_sub(t) as f64 / 1e3));
    let _ = writeln!(
        out,
        "<p id=\"vip\">VIP {} on {}: {holder} (for {:.1} s); last announced {announced}, {} \
         announcements.{}</p>",
        esc(&vip.address),
        esc(&vip.interface),
        now_ms.saturating_sub(vip.since_unix_ms) as f64 / 1e3,
        vip.announcements,
        vip.last_error.as_ref().map_or(String::new(), |e| format!(
            " <span class=\"bad\">Last error: {}</span>",
            esc(e)
        ))
    );
}

fn kind(k: MemberKind) -> &'static str {
    k.as_str()
}

fn long_work(out: &mut String, s: &ClusterStatus) {
    if s.long_work.is_empty() {
        return;
    }
    out.push_str("<h2>Under way</h2>\n<ul id=\"long-work\">\n");
    for work in &s.long_work {
        let _ = writeln!(out, "<li>{}</li>", esc(&views::long_work_line(work)));
    }
    out.push_str("</ul>\n");
}

fn metadata(out: &mut String, s: &ClusterStatus) {
    out.push_str("<h2>Metadata</h2>\n");
    table_head(
        out,
        "metadata",
        &["inodes", "directories", "files", "chunks", "in trash", "reserved", "sessions"],
    );
    let counts = [s.inodes, s.directories, s.files, s.chunks, s.trash_inodes];
    row(
        out,
        &counts
            .into_iter()
            .chain([s.sustained_inodes, s.sessions])
            .map(|n| n.to_string())
            .collect::<Vec<_>>(),
    );
    out.push_str("</table>\n");
}

fn servers(out: &mut String, s: &ClusterStatus) {
    let rows = views::servers(s);
    let _ = writeln!(out, "<h2>Chunkservers ({})</h2>", rows.len());
    table_head(
        out,
        "servers",
        &[
            "address",
            "chunks",
            "used",
            "total",
            "used %",
            "damaged disks",
            "marked disks",
            "labels",
        ],
    );
    for r in rows {
        row(
            out,
            &[
                r.addr,
                r.chunks.to_string(),
                bytes(r.used_bytes),
                bytes(r.total_bytes),
                percent(r.used_bytes, r.total_bytes),
                r.damaged_disks.to_string(),
                r.marked_disks.to_string(),
                r.labels.join(","),
            ],
        );
    }
    out.push_str("</table>\n");
}

fn disks(out: &mut String, s: &ClusterStatus) {
    out.push_str("<h2>Disks</h2>\n");
    table_head(
        out,
        "disks",
        &["chunkserver", "path", "chunks", "used", "total", "used %", "state"],
    );
    for d in views::disks(s) {
        let state = match d.damaged {
            true => format!("<span class=\"bad\">{}</span>", d.state()),
            false => d.state().to_string(),
        };
        let cells = [
            esc(&d.server),
            esc(&d.path),
            d.chunks.to_string(),
            bytes(d.used_bytes),
            bytes(d.total_bytes),
            percent(d.used_bytes, d.total_bytes),
            state,
        ];
        raw_row(out, &cells);
    }
    out.push_str("</table>\n");
}

fn matrix(out: &mut String, s: &ClusterStatus) {
    let h = views::chunks(s);
    out.push_str("<h2>Chunks</h2>\n");
    let _ = writeln!(
        out,
        "<p id=\"chunk-health\">{} chunks: <span class=\"missing\">{} missing</span>, \
         <span class=\"endangered\">{} endangered</span>, <span class=\"undergoal\">{} \
         undergoal</span>, <span class=\"stable\">{} stable</span>, <span class=\"overgoal\">{} \
         overgoal</span>.</p>",
        h.total, h.missing, h.endangered, h.undergoal, h.stable, h.overgoal
    );
    let last = CHUNK_MATRIX_SIDE - 1;
    let label = |i: usize| if i == last { format!("{last}+") } else { i.to_string() };
    out.push_str("<table id=\"matrix\"><tr><th class=\"l\">goal \\ valid copies</th>");
    for c in 0..CHUNK_MATRIX_SIDE {
        let _ = write!(out, "<th>{}</th>", label(c));
    }
    out.push_str("</tr>\n");
    for (goal, cells) in h.matrix.iter().enumerate() {
        if cells.iter().all(|&n| n == 0) {
            continue;
        }
        let _ = write!(out, "<tr><th class=\"l\">{}</th>", label(goal));
        for (valid, &n) in cells.iter().enumerate() {
            match n {
                0 => out.push_str("<td>-</td>"),
                n => {
                    let class = CellClass::of(goal, valid).as_str();
                    let _ = write!(
                        out,
                        "<td class=\"{class}\" data-goal=\"{goal}\" data-valid=\"{valid}\">{n}</td>"
                    );
                }
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

fn sessions(out: &mut String, s: &ClusterStatus) {
    let rows = views::sessions(s);
    let _ = writeln!(out, "<h2>Mounts ({})</h2>", rows.len());
    table_head(out, "sessions", &["session", "from", "mount", "open files"]);
    for r in rows {
        row(out, &[r.session.to_string(), r.peer, r.info, r.open_files.to_string()]);
    }
    out.push_str("</table>\n");
}

fn operations(out: &mut String, extras: &PageExtras) {
    out.push_str("<h2>Operations</h2>\n");
    if extras.operations.is_empty() {
        out.push_str("<p>No client operation served yet.</p>\n");
        return;
    }
    out.push_str(
        "<p>Client operations this master served since it started, and per second since \
        the page was last loaded (longer views: <code>rate()</code> on \
        <a href=\"/metrics\">/metrics</a>).</p>\n",
    );
    table_head(out, "operations", &["operation", "count", "per second"]);
    for (name, count, rate) in &extras.operations {
        let rate = rate.map_or("-".into(), |r| format!("{r:.1}"));
        row(out, &[name.clone(), count.to_string(), rate]);
    }
    out.push_str("</table>\n");
}

fn table_head(out: &mut String, id: &str, columns: &[&str]) {
    let _ = write!(out, "<table id=\"{id}\"><tr>");
    for c in columns {
        let _ = write!(out, "<th>{}</th>", esc(c));
    }
    out.push_str("</tr>\n");
}

/// A row of plain text cells (escaped here).
fn row(out: &mut String, cells: &[String]) {
    let escaped: Vec<String> = cells.iter().map(|c| esc(c)).collect();
    raw_row(out, &escaped);
}

/// A row of cells that are HTML already.
fn raw_row(out: &mut String, cells: &[String]) {
    out.push_str("<tr>");
    for (i, c) in cells.iter().enumerate() {
        // Text columns (the first, addresses and names) read better left-aligned.
        let class = if i == 0 { " class=\"l\"" } else { "" };
        let _ = write!(out, "<td{class}>{c}</td>");
    }
    out.push_str("</tr>\n");
}

/// `text` safe inside HTML text and attribute values: every name on the page comes from
/// configs and clients, which may hold anything.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
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

#[cfg(test)]
mod tests {
    use super::*;
    use mfsha_proto::client::{ChunkserverStatus, ClientStatus};

    fn status() -> ClusterStatus {
        let mut s = ClusterStatus {
            node_id: 2,
            role: "follower".into(),
            leader_id: 1,
            term: 4,
            cluster_id: "c<1>".into(),
            chunks: 3,
            ..Default::default()
        };
        s.chunk_matrix[2][2] = 2;
        s.chunk_matrix[2][1] = 1;
        s.chunkservers.push(ChunkserverStatus {
            addr: "10.0.0.7:9422".into(),
            chunks: 3,
            ..Default::default()
        });
        s.clients.push(ClientStatus {
            session: 5,
            peer: "p".into(),
            info: "<script>".into(),
            open_files: 1,
        });
        s
    }

    #[test]
    fn a_followers_page_links_to_the_leader_and_escapes_what_clients_send() {
        let extras = PageExtras {
            leader_page: leader_page(Some("10.0.0.1:9421"), 9425),
            ..Default::default()
        };
        let html = render(&status(), &extras);
        assert!(html.contains("href=\"http://10.0.0.1:9425/\""), "{html}");
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"), "{html}");
        assert!(html.contains("c&lt;1&gt;"));
        assert!(html.contains("class=\"endangered\" data-goal=\"2\" data-valid=\"1\">1</td>"));
        assert!(html.contains("class=\"stable\" data-goal=\"2\" data-valid=\"2\">2</td>"));
        assert!(html.contains("10.0.0.7:9422"));
    }

    #[test]
    fn a_leaders_page_has_no_follower_note() {
        let s = ClusterStatus { role: "leader".into(), ..status() };
        assert!(!render(&s, &PageExtras::default()).contains("follower-note"));
    }
}
