//! Where each key and list item of a YAML document starts, so that a config
//! error can name its line. serde_yaml's values carry no positions, so the
//! document is walked once more with an event parser.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Maps a path (`service.pipelines.traces.exporters[1]`) to a 1-based line.
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    lines: HashMap<String, usize>,
}

impl SourceMap {
    pub fn parse(source: &str) -> SourceMap {
        let mut builder = Builder::default();
        // Syntax errors are reported by serde_yaml; a partial map is still useful.
        let _ = Parser::new_from_str(source).load(&mut builder, false);
        SourceMap {
            lines: builder.lines,
        }
    }

    /// The line of `path`, or of its nearest ancestor that has one.
    pub fn line(&self, path: &[String]) -> Option<usize> {
        (1..=path.len())
            .rev()
            .find_map(|len| self.lines.get(&join(&path[..len])).copied())
    }
}

/// Joins path segments: keys with `.`, list indices (`[2]`) directly.
pub fn join(path: &[String]) -> String {
    let mut out = String::new();
    for segment in path {
        if !out.is_empty() && !segment.starts_with('[') {
            out.push('.');
        }
        out.push_str(segment);
    }
    out
}

enum Frame {
    Map { key: Option<String> },
    Seq { index: usize },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

impl Builder {
    fn path_with(&self, last: Option<String>) -> Vec<String> {
        let mut path: Vec<String> = self
            .stack
            .iter()
            .take(self.stack.len().saturating_sub(1))
            .filter_map(|frame| match frame {
                Frame::Map { key } => key.clone(),
                Frame::Seq { index } => Some(format!("[{index}]")),
            })
            .collect();
        path.extend(last);
        path
    }

    /// The segment a value at the current position gets, if any.
    fn value_segment(&self) -> Option<String> {
        match self.stack.last()? {
            Frame::Map { key } => key.clone(),
            Frame::Seq { index } => Some(format!("[{index}]")),
        }
    }

    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None }))
    }

    /// A value is complete: move the parent to its next key or item.
    fn advance(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key }) => *key = None,
            Some(Frame::Seq { index }) => *index += 1,
            None => {}
        }
    }

    fn record_value(&mut self, line: usize) {
        if let Some(Frame::Seq { .. }) = self.stack.last() {
            let path = self.path_with(self.value_segment());
            self.lines.entry(join(&path)).or_insert(line);
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let line = mark.line();
        match event {
            Event::Scalar(text, ..) if self.expecting_key() => {
                let path = self.path_with(Some(text.clone()));
                self.lines.insert(join(&path), line);
                if let Some(Frame::Map { key }) = self.stack.last_mut() {
                    *key = Some(text);
                }
            }
            Event::Scalar(..) | Event::Alias(_) => {
                self.record_value(line);
                self.advance();
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                self.record_value(line);
                let frame = if matches!(event, Event::MappingStart(..)) {
                    Frame::Map { key: None }
                } else {
                    Frame::Seq { index: 0 }
                };
                self.stack.push(frame);
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.advance();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> Vec<String> {
        text.split('.').map(str::to_string).collect()
    }

    #[test]
    fn finds_keys_and_list_items() {
        let source = "receivers:\n  otlp:\n    protocols:\n      http:\n        endpont: x\nservice:\n  pipelines:\n    traces:\n      exporters: [debug, file]\n      processors:\n        - batch\n        - other\n";
        let map = SourceMap::parse(source);
        assert_eq!(
            map.line(&path("receivers.otlp.protocols.http.endpont")),
            Some(5)
        );
        assert_eq!(map.line(&path("service.pipelines.traces")), Some(8));
        let mut items = path("service.pipelines.traces.processors");
        items.push("[1]".into());
        assert_eq!(map.line(&items), Some(12));
        assert_eq!(join(&items), "service.pipelines.traces.processors[1]");
    }

    #[test]
    fn falls_back_to_the_nearest_ancestor() {
        let map = SourceMap::parse("a:\n  b: 1\n");
        assert_eq!(map.line(&path("a.b.c.d")), Some(2));
        assert_eq!(map.line(&path("zzz")), None);
    }
}
