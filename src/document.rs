//! Documents as blocks (headings, paragraphs, tables, images) rendered to Markdown and to
//! self-contained HTML (images inlined as base64 PNG), so that a report's two forms never
//! disagree. A leaf module: the run report, the validation and studies all write through it.

use std::path::Path;

use base64::Engine as _;

use crate::error::{Error, Result};

/// A piece of the report.
#[derive(Clone, Debug)]
pub enum Block {
    /// A heading of level 1 to 3.
    Heading(u8, String),
    /// A paragraph (may hold inline `code`).
    Para(String),
    /// A table: header and rows.
    Table(Vec<String>, Vec<Vec<String>>),
    /// A chart image: file name and caption.
    Image(String, String),
}

/// The report as Markdown.
pub fn markdown(blocks: &[Block]) -> String {
    let mut out = String::new();
    for b in blocks {
        match b {
            Block::Heading(l, t) => out.push_str(&format!("{} {t}\n\n", "#".repeat(*l as usize))),
            Block::Para(t) => out.push_str(&format!("{t}\n\n")),
            Block::Table(h, rows) => {
                out.push_str(&format!(
                    "| {} |\n|{}\n",
                    h.join(" | "),
                    "---|".repeat(h.len())
                ));
                for r in rows {
                    out.push_str(&format!("| {} |\n", r.join(" | ")));
                }
                out.push('\n');
            }
            Block::Image(file, caption) => {
                out.push_str(&format!("![{caption}]({file})\n\n*{caption}*\n\n"))
            }
        }
    }
    out
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Inline `code` spans to `<code>`.
fn inline(t: &str) -> String {
    escape(t)
        .split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                format!("<code>{part}</code>")
            } else {
                part.to_string()
            }
        })
        .collect()
}

/// The report as one HTML file, charts inlined from `dir`.
pub fn html(blocks: &[Block], dir: &Path) -> Result<String> {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>adsim report</title>\n<style>\
         body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}\
         table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}\
         th{background:#f2f2f2}td{max-width:32em}.wide{overflow-x:auto}.ci{color:#666;font-size:85%;white-space:nowrap}img{max-width:100%}figcaption{font-style:italic;margin-bottom:2em}</style></head><body>\n",
    );
    for b in blocks {
        match b {
            Block::Heading(l, t) => out.push_str(&format!("<h{l}>{}</h{l}>\n", inline(t))),
            Block::Para(t) => out.push_str(&format!("<p>{}</p>\n", inline(t))),
            Block::Table(h, rows) => {
                // Long headers (metric names) may break after an underscore, and a table still
                // wider than the page scrolls inside it rather than running off its edge.
                out.push_str("<div class=\"wide\"><table><tr>");
                for c in h {
                    out.push_str(&format!("<th>{}</th>", inline(c).replace('_', "_<wbr>")));
                }
                out.push_str("</tr>\n");
                for r in rows {
                    out.push_str("<tr>");
                    for c in r {
                        // A value's interval goes on a line of its own, in small type.
                        let cell = match c.split_once(" [") {
                            Some((v, ci)) if ci.ends_with(']') => format!(
                                "{}<br><span class=\"ci\">[{}</span>",
                                inline(v),
                                inline(ci)
                            ),
                            _ => inline(c),
                        };
                        out.push_str(&format!("<td>{cell}</td>"));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</table></div>\n");
            }
            Block::Image(file, caption) => {
                let path = dir.join(file);
                let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                let data = base64::engine::general_purpose::STANDARD.encode(bytes);
                out.push_str(&format!(
                    "<figure><img alt=\"{}\" src=\"data:image/png;base64,{data}\"><figcaption>{}</figcaption></figure>\n",
                    escape(&caption.replace('`', "")),
                    inline(caption)
                ));
            }
        }
    }
    out.push_str("</body></html>\n");
    Ok(out)
}
