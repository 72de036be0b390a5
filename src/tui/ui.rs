//! Drawing: `draw(&App, frame)` lays out the chat pane, the optional code pane, pending chips, the
//! composer, the completion popup and the status bar (with the latent mode). A latent-mode
//! reply shows its rounded thoughts above its text (one line each, or one summary line). It
//! reads state only (no I/O); wrapped chat lines are cached per entry keyed by (version, width,
//! theme, first code-block number).

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, List, ListItem, ListState, Paragraph, Sparkline};
use ratatui::Frame;
use ratatui_image::Image;

use crate::engine::{thought_text, Role, ThoughtToken};
use crate::tui::app::chat::{CachedEntry, Entry, EntryKind};
use crate::tui::app::{App, Focus, GenState};
use crate::tui::codepane::{FileView, PaneContent};
use crate::tui::markdown;

pub fn draw(app: &App, f: &mut Frame) {
    let area = f.area();
    f.render_widget(Block::default().style(app.theme.base()), area);
    if area.width < 2 || area.height < 2 {
        return;
    }
    let chips = chip_spans(app);
    let composer_h = (app.composer.text.lines().len() as u16 + 2)
        .clamp(3, 10)
        .min(area.height.saturating_sub(1));
    let chips_h = u16::from(!chips.is_empty() && area.height >= 8);
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Min(0),
            Constraint::Length(chips_h),
            Constraint::Length(composer_h),
            Constraint::Length(1),
        ])
        .split(area);
    let main = rows[0];
    if app.code.visible && app.code.content.is_some() && main.width >= 30 {
        let cols = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([
                Constraint::Percentage(100 - app.code.percent),
                Constraint::Percentage(app.code.percent),
            ])
            .split(main);
        draw_chat(app, f, cols[0]);
        draw_pane(app, f, cols[1]);
    } else {
        draw_chat(app, f, main);
    }
    if chips_h > 0 {
        f.render_widget(Paragraph::new(Line::from(chips)), rows[1]);
    }
    draw_composer(app, f, rows[2]);
    draw_status(app, f, rows[3]);
    if app.composer.popup.is_some() {
        draw_popup(app, f, main, rows[2]);
    }
}

fn chip_spans(app: &App) -> Vec<Span<'static>> {
    let mut v = Vec::new();
    for c in &app.composer.context {
        v.push(Span::styled(
            format!(" {} ", short(&c.label, 40)),
            app.theme.chip(),
        ));
        v.push(Span::raw(" "));
    }
    for a in &app.composer.attachments {
        v.push(Span::styled(
            format!(" {} ", crate::attach::chip_label(a)),
            app.theme.chip(),
        ));
        v.push(Span::raw(" "));
    }
    v
}

fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let tail: String = s
            .chars()
            .rev()
            .take(max.saturating_sub(1))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    }
}

fn welcome(app: &App) -> Vec<Line<'static>> {
    let t = &app.theme;
    let mut v = vec![
        Line::styled("Tritter — an offline coding assistant", t.title()),
        Line::default(),
    ];
    match &app.engine {
        Ok(i) => {
            v.push(Line::from(vec![
                Span::styled("model ", t.dim()),
                Span::raw(format!(
                    "{} on {} · {} tokens of context",
                    i.model_name, i.device, i.context_limit
                )),
            ]));
            v.push(Line::styled(i.description.clone(), t.dim()));
            if let Some(f) = &i.gpu_fit {
                v.push(Line::styled(format!("GPU cache: {}", f.summary()), t.dim()));
            }
        }
        Err(e) => v.push(Line::styled(format!("No model is loaded: {e}"), t.error())),
    }
    v.push(Line::default());
    v.push(Line::styled(
        "Enter sends · Shift+Enter/Alt+Enter/Ctrl+J newline · Esc stops a reply · /help lists commands",
        t.dim(),
    ));
    v.push(Line::styled(
        "@path or /file PATH adds code · /img, /audio attach · Ctrl+C twice quits",
        t.dim(),
    ));
    v
}

/// The wrapped lines of one entry (without the cache).
fn entry_lines(
    app: &App,
    e: &Entry,
    width: u16,
    first_block: usize,
) -> (Vec<Line<'static>>, usize) {
    let t = &app.theme;
    let inner = width.saturating_sub(2).max(1);
    let indent = |lines: Vec<Line<'static>>| -> Vec<Line<'static>> {
        markdown::wrap(&lines, inner)
            .into_iter()
            .map(|mut l| {
                l.spans.insert(0, Span::raw("  "));
                l
            })
            .collect()
    };
    let mut out = Vec::new();
    let mut blocks = 0;
    match e.kind {
        EntryKind::Notice | EntryKind::Error => {
            let st = if e.kind == EntryKind::Error {
                t.error()
            } else {
                t.notice()
            };
            let lines: Vec<Line<'static>> = e
                .msg
                .content
                .lines()
                .map(|l| Line::styled(l.to_string(), st))
                .collect();
            let mut w = markdown::wrap(&lines, width.saturating_sub(2).max(1));
            if let Some(first) = w.first_mut() {
                first.spans.insert(
                    0,
                    Span::styled(
                        if e.kind == EntryKind::Error {
                            "✗ "
                        } else {
                            "• "
                        },
                        st,
                    ),
                );
            }
            for l in w.iter_mut().skip(1) {
                l.spans.insert(0, Span::raw("  "));
            }
            out.extend(w);
        }
        EntryKind::Message => {
            let who = match e.msg.role {
                Role::User => "you".to_string(),
                Role::Assistant => app.model_name().to_string(),
                Role::System => "system".to_string(),
            };
            out.push(Line::from(vec![
                Span::styled("▌ ", t.role(e.msg.role)),
                Span::styled(who, t.role(e.msg.role)),
            ]));
            if !e.thoughts.is_empty() {
                out.extend(indent(thought_lines(app, &e.thoughts)));
            }
            let body = match e.msg.role {
                Role::Assistant => {
                    let (lines, n) = markdown::render(&e.msg.content, t, t.base(), first_block);
                    blocks = n;
                    lines
                }
                Role::User | Role::System => e
                    .msg
                    .content
                    .lines()
                    .map(|l| Line::raw(l.to_string()))
                    .collect(),
            };
            out.extend(indent(body));
            let mut chips: Vec<Span<'static>> = vec![Span::raw("  ")];
            for c in &e.msg.context {
                chips.push(Span::styled(format!(" {} ", short(&c.label, 40)), t.chip()));
                chips.push(Span::raw(" "));
            }
            for a in &e.msg.attachments {
                let mut label = crate::attach::chip_label(a);
                if e.not_sent {
                    label.push_str(" (not sent)");
                }
                chips.push(Span::styled(format!(" {label} "), t.chip()));
                chips.push(Span::raw(" "));
            }
            if chips.len() > 1 {
                out.extend(markdown::wrap(&[Line::from(chips)], width.max(1)));
            }
            if let Some(s) = &e.stats {
                out.push(Line::styled(format!("  {s}"), t.dim()));
            }
        }
    }
    out.push(Line::default());
    (out, blocks)
}

/// The "thinking" lines above a latent-mode reply: shown, one line per thought with its nearest
/// tokens and their cosines; hidden (Ctrl+T), one line with each thought's nearest token.
fn thought_lines(app: &App, thoughts: &[Vec<ThoughtToken>]) -> Vec<Line<'static>> {
    let t = &app.theme;
    let n = thoughts.len();
    let noun = if n == 1 { "thought" } else { "thoughts" };
    if !app.show_thoughts {
        let tops: Vec<String> = thoughts
            .iter()
            .map(|c| c.first().map_or("?".to_string(), ThoughtToken::label))
            .collect();
        return vec![Line::styled(
            format!(
                "▸ thinking · {n} {noun}: {} (Ctrl+T shows)",
                tops.join(" → ")
            ),
            t.dim(),
        )];
    }
    let mut v = vec![Line::styled(
        format!("▾ thinking · {n} {noun} (Ctrl+T hides)"),
        t.dim(),
    )];
    for (i, c) in thoughts.iter().enumerate() {
        v.push(Line::from(vec![
            Span::styled(format!("  thought {}: ", i + 1), t.dim()),
            Span::styled(thought_text(c), t.dim()),
        ]));
    }
    v
}

fn chat_lines(app: &App, width: u16) -> Vec<Line<'static>> {
    if app.chat.entries.is_empty() {
        return markdown::wrap(&welcome(app), width.max(1));
    }
    let mut cache = app.chat.cache.borrow_mut();
    cache.resize_with(app.chat.entries.len(), || None);
    let mut out = Vec::new();
    let mut first_block = 0;
    for (i, e) in app.chat.entries.iter().enumerate() {
        let key = (e.version, width, app.theme_gen, first_block);
        let hit = matches!(&cache[i], Some(c) if c.key == key);
        if !hit {
            let (lines, blocks) = entry_lines(app, e, width, first_block);
            cache[i] = Some(CachedEntry { key, lines, blocks });
        }
        if let Some(c) = &cache[i] {
            out.extend(c.lines.iter().cloned());
            first_block += c.blocks;
        }
    }
    out
}

fn draw_chat(app: &App, f: &mut Frame, area: Rect) {
    let block = Block::default()
        .borders(Borders::TOP)
        .border_style(app.theme.border(false))
        .title(Span::styled(" chat ", app.theme.title()));
    let inner = block.inner(area);
    f.render_widget(block, area);
    if inner.height == 0 || inner.width == 0 {
        return;
    }
    let lines = chat_lines(app, inner.width);
    let h = usize::from(inner.height);
    let max_scroll = lines.len().saturating_sub(h);
    app.chat.max_scroll.set(max_scroll);
    let scroll = app.chat.scroll.min(max_scroll);
    let start = lines.len().saturating_sub(h + scroll);
    let visible: Vec<Line> = lines.into_iter().skip(start).take(h).collect();
    f.render_widget(Paragraph::new(visible).style(app.theme.base()), inner);
}

fn draw_pane(app: &App, f: &mut Frame, area: Rect) {
    let focused = app.focus == Focus::CodePane;
    let title = match &app.code.content {
        Some(PaneContent::File(v)) => v.display.clone(),
        Some(PaneContent::Image { label, .. }) | Some(PaneContent::Audio { label, .. }) => {
            label.clone()
        }
        None => String::new(),
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(app.theme.border(focused))
        .title(Span::styled(format!(" {title} "), app.theme.title()));
    let inner = block.inner(area);
    f.render_widget(block, area);
    if inner.height == 0 || inner.width == 0 {
        return;
    }
    match &app.code.content {
        Some(PaneContent::File(v)) => draw_file(app, f, inner, v, focused),
        Some(PaneContent::Image { protocol, .. }) => {
            f.render_widget(Image::new(protocol.as_ref()).allow_clipping(true), inner);
        }
        Some(PaneContent::Audio { wave, .. }) => {
            let h = inner.height.min(8);
            let spark_area = Rect { height: h, ..inner };
            f.render_widget(
                Sparkline::default()
                    .data(wave.as_slice())
                    .max(100)
                    .style(Style::default().fg(app.theme.accent)),
                spark_area,
            );
        }
        None => {}
    }
}

fn draw_file(app: &App, f: &mut Frame, area: Rect, v: &FileView, focused: bool) {
    let t = &app.theme;
    let code_area = if !v.outline.is_empty() && area.height >= 8 {
        let oh = (v.outline.len() as u16 + 1).min(area.height / 3);
        let parts = Layout::default()
            .direction(Direction::Vertical)
            .constraints([Constraint::Length(oh), Constraint::Min(0)])
            .split(area);
        let items: Vec<ListItem> = v
            .outline
            .iter()
            .map(|s| {
                ListItem::new(Line::from(vec![
                    Span::raw("  ".repeat(s.depth)),
                    Span::styled(format!("{} ", s.kind.label()), t.dim()),
                    Span::raw(s.name.clone()),
                    Span::styled(format!(" :{}", s.start_line + 1), t.dim()),
                ]))
            })
            .collect();
        let mut state = ListState::default().with_selected(Some(v.selected));
        let hl = if focused {
            t.selected()
        } else {
            Style::default().add_modifier(Modifier::BOLD)
        };
        let list = List::new(items)
            .block(
                Block::default()
                    .borders(Borders::BOTTOM)
                    .border_style(t.border(false)),
            )
            .highlight_style(hl)
            .highlight_symbol("› ");
        f.render_stateful_widget(list, parts[0], &mut state);
        parts[1]
    } else {
        area
    };
    let mut lines: Vec<Line> = Vec::new();
    if let Some(note) = &v.outline_note {
        lines.push(Line::styled(note.clone(), t.notice()));
    }
    let digits = v.lines.len().max(1).to_string().len();
    let sel = v.outline.get(v.selected);
    for (i, l) in v
        .lines
        .iter()
        .enumerate()
        .skip(v.scroll)
        .take(usize::from(code_area.height))
    {
        let in_sel = sel.is_some_and(|s| (s.start_line..=s.end_line).contains(&i));
        let num_style = if in_sel {
            Style::default().fg(t.accent)
        } else {
            t.dim()
        };
        let mut spans = vec![Span::styled(format!("{:>digits$} ", i + 1), num_style)];
        spans.extend(l.spans.iter().cloned());
        lines.push(Line::from(spans));
    }
    f.render_widget(Paragraph::new(lines).style(t.base()), code_area);
}

fn draw_composer(app: &App, f: &mut Frame, area: Rect) {
    let focused = app.focus == Focus::Composer;
    let mut ta = app.composer.text.clone();
    ta.set_block(
        Block::default()
            .borders(Borders::ALL)
            .border_style(app.theme.border(focused))
            .title(Span::styled(" message ", app.theme.title())),
    );
    if !focused {
        ta.set_cursor_style(Style::default());
    }
    f.render_widget(&ta, area);
}

fn draw_popup(app: &App, f: &mut Frame, main: Rect, composer: Rect) {
    let Some(p) = &app.composer.popup else { return };
    let items = &p.completions.items;
    let h = (items.len() as u16 + 2).min(10).min(main.height);
    let w = items
        .iter()
        .map(|c| (c.insert.chars().count() + c.detail.chars().count() + 6) as u16)
        .max()
        .unwrap_or(10)
        .min(main.width);
    if h < 3 || w < 6 {
        return;
    }
    let area = Rect {
        x: composer.x + 1,
        y: composer.y.saturating_sub(h),
        width: w.min(main.width.saturating_sub(1)),
        height: h,
    };
    let list_items: Vec<ListItem> = items
        .iter()
        .map(|c| {
            ListItem::new(Line::from(vec![
                Span::raw(c.insert.clone()),
                Span::raw("  "),
                Span::styled(c.detail.clone(), app.theme.dim()),
            ]))
        })
        .collect();
    let mut state = ListState::default().with_selected(Some(p.selected));
    let list = List::new(list_items)
        .block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(app.theme.border(true)),
        )
        .style(app.theme.popup())
        .highlight_style(app.theme.selected());
    f.render_widget(Clear, area);
    f.render_stateful_widget(list, area, &mut state);
}

fn draw_status(app: &App, f: &mut Frame, area: Rect) {
    let (device, limit) = match &app.engine {
        Ok(i) => match &i.gpu_fit {
            Some(f) => (
                format!("{} · {}", i.device, f.short()),
                i.context_limit.to_string(),
            ),
            None => (i.device.clone(), i.context_limit.to_string()),
        },
        Err(_) => ("-".to_string(), "-".to_string()),
    };
    let state = match (app.gen, app.engine.is_ok()) {
        (_, false) => "no model",
        (GenState::Idle, true) => "ready",
        (GenState::Waiting, true) => "thinking…",
        (GenState::Streaming, true) => "streaming",
        (GenState::Stopping, true) => "stopping…",
    };
    let tps = app
        .tok_per_s
        .map(|v| format!("{v:.1} tok/s"))
        .unwrap_or_else(|| "- tok/s".into());
    let hint = if app
        .ctrl_c_at
        .is_some_and(|t| t.elapsed() < crate::tui::app::QUIT_WINDOW)
    {
        "Ctrl+C again to quit"
    } else if app.busy() {
        "Esc stops"
    } else {
        "/help"
    };
    let mut modes = String::new();
    if app.raw {
        modes.push_str(" · raw");
    }
    if let Some(m) = app.map.status() {
        modes.push_str(&format!(" · {m}"));
    }
    let text = format!(
        " {} · {device} · {tps} · ctx {}/{limit} · latent {}{modes} · {state} · {hint}",
        app.model_name(),
        app.chat.context_used,
        app.latent.name(),
    );
    f.render_widget(
        Paragraph::new(Line::styled(text, app.theme.status())).style(app.theme.status()),
        area,
    );
}
