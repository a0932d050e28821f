//! The live view of `attach`: one screen, fits 80x24, redrawn every second.
use ratatui::{
    Frame,
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Paragraph, Row, Table},
};

use super::AttachState;
use crate::errors::node_label;

/// Most migration pairs listed (the rest are summed in the node table anyway).
const MAX_PAIRS: usize = 6;

fn per_second(count: u64, seconds: f64) -> String {
    if seconds <= 0.0 {
        "-".into()
    } else {
        format!("{:.1}", count as f64 / seconds)
    }
}

fn clock(seconds: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// `local 10   remote 90   remote ratio 0.90`, with `n/a` where nothing was measured.
fn access_line(accesses: Option<(u64, u64)>) -> String {
    let na = || "n/a".to_owned();
    let (local, remote) =
        accesses.map_or_else(|| (na(), na()), |(l, r)| (l.to_string(), r.to_string()));
    let ratio = accesses
        .filter(|(l, r)| l + r > 0)
        .map_or_else(na, |(l, r)| format!("{:.2}", r as f64 / (l + r) as f64));
    format!("local {local}   remote {remote}   remote ratio {ratio}")
}

pub fn draw(frame: &mut Frame, state: &AttachState) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let pairs = state.sorted_pairs();
    let shown_pairs = pairs.len().min(MAX_PAIRS);
    let [title, nodes, migrations, accesses, errors, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(state.nodes.len() as u16 + 2),
        Constraint::Length(shown_pairs.max(1) as u16 + 2),
        Constraint::Length(3),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());

    let pids = match state.pids.len() {
        0 => "exited".to_owned(),
        1 => "1 process".to_owned(),
        n => format!("{n} processes"),
    };
    frame.render_widget(
        Paragraph::new(format!(
            " numa-agent attach: {} | {pids} | {} nodes | {} | {} NUMA errors",
            state.target,
            state.nodes.len(),
            clock(state.elapsed_seconds),
            state.errors_total
        ))
        .style(Style::default().add_modifier(Modifier::REVERSED)),
        title,
    );

    let secs = state.last_interval_seconds;
    let node_rows = state.sorted_nodes().into_iter().map(|r| {
        Row::new(vec![
            format!("node {}", node_label(r.node)),
            r.cpus.clone(),
            format!(
                "{:.3}",
                if secs > 0.0 {
                    r.cpu_seconds / secs
                } else {
                    0.0
                }
            ),
            format!("{:.2}", r.cpu_seconds_total),
            per_second(r.migrations_in, secs),
            per_second(r.migrations_out, secs),
        ])
    });
    frame.render_widget(
        Table::new(
            node_rows,
            [
                Constraint::Length(12),
                Constraint::Length(12),
                Constraint::Length(10),
                Constraint::Length(11),
                Constraint::Length(10),
                Constraint::Length(10),
            ],
        )
        .header(Row::new(vec!["", "CPUs", "CPU s/s", "CPU s tot", "in/s", "out/s"]).style(bold))
        .block(ratatui::widgets::Block::new().title(Line::styled(
            "Per node: CPU time (s per s) and cross-node migrations",
            bold,
        ))),
        nodes,
    );

    let pair_rows: Vec<Row> = pairs
        .iter()
        .take(MAX_PAIRS)
        .map(|((from, to), c)| {
            Row::new(vec![
                format!("{} -> {}", node_label(*from), node_label(*to)),
                per_second(c.last, secs),
                c.total.to_string(),
            ])
        })
        .collect();
    let pair_rows = if pair_rows.is_empty() {
        vec![Row::new(vec![
            "none yet".to_owned(),
            String::new(),
            String::new(),
        ])]
    } else {
        pair_rows
    };
    frame.render_widget(
        Table::new(
            pair_rows,
            [
                Constraint::Length(12),
                Constraint::Length(10),
                Constraint::Length(10),
            ],
        )
        .header(Row::new(vec!["from -> to", "/s", "total"]).style(bold))
        .block(ratatui::widgets::Block::new().title(Line::styled("Cross-node migrations", bold))),
        migrations,
    );

    frame.render_widget(
        Paragraph::new(vec![
            Line::styled("Memory placement (pages allocated last interval)", bold),
            Line::from(access_line(state.accesses)),
            Line::from("(new pages by CPU node vs page node, kmem:mm_page_alloc)"),
        ]),
        accesses,
    );

    let mut lines = vec![Line::styled("Recent NUMA errors (newest first)", bold)];
    if state.recent.is_empty() {
        lines.push(Line::from("none yet"));
    }
    lines.extend(state.recent.iter().map(|e| Line::from(e.as_str())));
    frame.render_widget(Paragraph::new(lines), errors);

    frame.render_widget(
        Paragraph::new(format!(
            " q quit | s sort (by {}) | refreshed every 1 s",
            state.sort.label()
        ))
        .style(Style::default().add_modifier(Modifier::REVERSED)),
        footer,
    );
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::topology::{Node, Topology};

    fn screen(state: &AttachState) -> Vec<String> {
        let mut t = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
        t.draw(|f| draw(f, state)).expect("draw");
        let buf = t.backend().buffer().clone();
        (0..24)
            .map(|y| {
                (0..80)
                    .map(|x| buf[(x, y)].symbol().to_owned())
                    .collect::<String>()
            })
            .collect()
    }

    #[test]
    fn fits_80x24_with_every_section() {
        let topology = Topology::from_parts(
            vec![Node::new(0, vec![0]), Node::new(1, vec![1])],
            BTreeMap::new(),
            "t",
        );
        let mut s = AttachState::new("pid 42".into(), &topology);
        s.pids = BTreeSet::from([42]);
        for i in 0..30 {
            s.recent.push_back(format!(
                "16:00:00.{i:03} NUMAStealError task:42 (w) 0->1 forced"
            ));
        }
        let rows = screen(&s);
        let text = rows.join("\n");
        assert!(
            rows[0].contains("numa-agent attach: pid 42 | 1 process | 2 nodes"),
            "{text}"
        );
        assert!(text.contains("node 0"), "{text}");
        assert!(text.contains("none yet"), "{text}");
        assert!(text.contains("remote ratio n/a"), "{text}");
        assert!(rows[23].contains("q quit | s sort (by node)"), "{text}");
        // The error list is cut to the space left, never pushing the footer off.
        assert!(text.contains("16:00:00.000"), "{text}");
        assert!(!text.contains("16:00:00.029"), "{text}");
    }
}
