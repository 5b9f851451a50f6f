//! The `parse-document` logic: title, word count and headings of a markdown text, and
//! how the orchestrator cuts a document into pages.

use serde::{Deserialize, Serialize};

/// What `parse-document` extracts from a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParsedDocument {
    /// The text of the first `# ` heading, if any.
    pub title: Option<String>,
    /// Words (whitespace-separated tokens with a letter or digit) outside code fences
    /// and markup.
    pub word_count: u64,
    /// Every ATX heading (`#` to `######`) in order, without the `#`s.
    pub headings: Vec<String>,
}

/// Parses markdown `text`. Lines inside ``` / ~~~ fences are neither headings nor words.
pub fn parse_markdown(text: &str) -> ParsedDocument {
    let mut title = None;
    let mut headings = Vec::new();
    let mut word_count = 0;
    let mut fence: Option<&str> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(marker) = fence_marker(trimmed) {
            match fence {
                Some(open) if open == marker => fence = None,
                Some(_) => {}
                None => fence = Some(marker),
            }
            continue;
        }
        if fence.is_some() {
            continue;
        }
        if let Some((level, heading)) = heading(trimmed) {
            if level == 1 && title.is_none() {
                title = Some(heading.to_owned());
            }
            headings.push(heading.to_owned());
            word_count += count_words(heading);
        } else {
            word_count += count_words(trimmed);
        }
    }
    ParsedDocument {
        title,
        word_count,
        headings,
    }
}

/// Cuts markdown `text` into pages: a page starts at every heading outside a code
/// fence and runs to the next one; text before the first heading is a page of its own
/// unless it is blank. Pages are whole lines, so the words of the pages add up to the
/// words of the document.
pub fn split_pages(text: &str) -> Vec<String> {
    let mut pages = Vec::new();
    let mut page = String::new();
    let mut fence: Option<&str> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(marker) = fence_marker(trimmed) {
            match fence {
                Some(open) if open == marker => fence = None,
                Some(_) => {}
                None => fence = Some(marker),
            }
        } else if fence.is_none() && heading(trimmed).is_some() && !page.trim().is_empty() {
            pages.push(std::mem::take(&mut page));
        }
        page.push_str(line);
        page.push('\n');
    }
    if !page.trim().is_empty() {
        pages.push(page);
    }
    pages
}

fn fence_marker(line: &str) -> Option<&'static str> {
    if line.starts_with("```") {
        Some("```")
    } else if line.starts_with("~~~") {
        Some("~~~")
    } else {
        None
    }
}

/// `(level, text)` of an ATX heading line such as `## Setup ##`.
fn heading(line: &str) -> Option<(usize, &str)> {
    let level = line.bytes().take_while(|b| *b == b'#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &line[level..];
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None;
    }
    let text = rest.trim().trim_end_matches('#').trim_end();
    Some((level, text))
}

fn count_words(text: &str) -> u64 {
    let words = text
        .split_whitespace()
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .count();
    u64::try_from(words).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_title_headings_and_words() {
        let doc = "# Getting Started\n\nAdze runs durable workflows.\n\n## Install ##\n\n- run `cargo build`\n";
        let parsed = parse_markdown(doc);
        assert_eq!(parsed.title.as_deref(), Some("Getting Started"));
        assert_eq!(parsed.headings, vec!["Getting Started", "Install"]);
        // Getting Started (2) + Adze runs durable workflows. (4) + Install (1) + run `cargo build` (3)
        assert_eq!(parsed.word_count, 10);
    }

    #[test]
    fn title_is_the_first_level_one_heading() {
        let parsed = parse_markdown("## Intro\n# Real Title\n# Second\n");
        assert_eq!(parsed.title.as_deref(), Some("Real Title"));
        assert_eq!(parsed.headings.len(), 3);
    }

    #[test]
    fn ignores_code_fences_and_non_headings() {
        let parsed =
            parse_markdown("#hashtag\n```\n# not a heading\nfn main() {}\n```\n####### seven\n");
        assert_eq!(parsed.title, None);
        assert!(parsed.headings.is_empty());
        // "#hashtag" and "seven"; the bare "#######" has no letters.
        assert_eq!(parsed.word_count, 2);
    }

    #[test]
    fn a_page_starts_at_each_heading_outside_fences() {
        let doc = "intro line\n\n# One\ntext\n```\n# in code\n```\n## Two\nmore words\n";
        let pages = split_pages(doc);
        assert_eq!(
            pages,
            vec![
                "intro line\n\n",
                "# One\ntext\n```\n# in code\n```\n",
                "## Two\nmore words\n"
            ]
        );
        let words: u64 = pages.iter().map(|p| parse_markdown(p).word_count).sum();
        assert_eq!(words, parse_markdown(doc).word_count);
    }

    #[test]
    fn blank_text_has_no_pages() {
        assert!(split_pages("").is_empty());
        assert!(split_pages("\n  \n").is_empty());
        assert_eq!(split_pages("\n# Only\n"), vec!["\n# Only\n"]);
    }

    #[test]
    fn empty_document() {
        assert_eq!(
            parse_markdown(""),
            ParsedDocument {
                title: None,
                word_count: 0,
                headings: Vec::new()
            }
        );
    }
}
