//! SQL as tokens and statements: enough to read the statements migrations write.

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Token {
    /// A keyword or (possibly qualified) name, upper-cased; quoted parts keep their case.
    Word(String),
    /// A string literal's contents.
    Str(String),
    /// A dollar-quoted body (a function's or a `DO` block's).
    Body(String),
    Punct(char),
}

pub(super) struct Statement {
    pub(super) line: usize,
    pub(super) tokens: Vec<Token>,
}

impl Statement {
    pub(super) fn word(&self, i: usize) -> Option<&str> {
        match self.tokens.get(i) {
            Some(Token::Word(w)) => Some(w),
            _ => None,
        }
    }

    pub(super) fn words_from(&self, i: usize) -> impl Iterator<Item = &str> {
        self.tokens[i.min(self.tokens.len())..]
            .iter()
            .filter_map(|t| match t {
                Token::Word(w) => Some(w.as_str()),
                _ => None,
            })
    }

    pub(super) fn starts_with(&self, words: &[&str]) -> bool {
        words
            .iter()
            .enumerate()
            .all(|(i, w)| self.word(i) == Some(w))
    }
}

/// Splits SQL into statements at top-level semicolons, dropping comments.
pub(super) fn split(sql: &str) -> Vec<Statement> {
    let chars: Vec<char> = sql.chars().collect();
    let mut lexer = Lexer {
        chars: &chars,
        i: 0,
        line: 1,
    };
    let mut statements = Vec::new();
    let mut tokens = Vec::new();
    let mut start_line = 1;
    while let Some(&c) = chars.get(lexer.i) {
        let next = chars.get(lexer.i + 1).copied();
        if c == '\n' {
            lexer.line += 1;
            lexer.i += 1;
        } else if c.is_whitespace() {
            lexer.i += 1;
        } else if c == '-' && next == Some('-') {
            lexer.skip_line_comment();
        } else if c == '/' && next == Some('*') {
            lexer.skip_block_comment();
        } else if c == ';' {
            if !tokens.is_empty() {
                statements.push(Statement {
                    line: start_line,
                    tokens: std::mem::take(&mut tokens),
                });
            }
            lexer.i += 1;
        } else {
            if tokens.is_empty() {
                start_line = lexer.line;
            }
            tokens.push(lexer.token(c, next));
        }
    }
    if !tokens.is_empty() {
        statements.push(Statement {
            line: start_line,
            tokens,
        });
    }
    statements
}

/// Where `split` is in the SQL, and on which line.
struct Lexer<'a> {
    chars: &'a [char],
    i: usize,
    line: usize,
}

impl Lexer<'_> {
    fn bump_lines(&mut self, from: usize) {
        self.line += self.chars[from..self.i.min(self.chars.len())]
            .iter()
            .filter(|c| **c == '\n')
            .count();
    }

    fn skip_line_comment(&mut self) {
        while self.i < self.chars.len() && self.chars[self.i] != '\n' {
            self.i += 1;
        }
    }

    /// `/* ... */`, nested as PostgreSQL nests them.
    fn skip_block_comment(&mut self) {
        let (chars, from, mut depth) = (self.chars, self.i, 0);
        while self.i < chars.len() {
            if chars[self.i] == '/' && chars.get(self.i + 1) == Some(&'*') {
                depth += 1;
                self.i += 2;
            } else if chars[self.i] == '*' && chars.get(self.i + 1) == Some(&'/') {
                depth -= 1;
                self.i += 2;
                if depth == 0 {
                    break;
                }
            } else {
                self.i += 1;
            }
        }
        self.bump_lines(from);
    }

    /// The token starting with `c` (followed by `next`).
    fn token(&mut self, c: char, next: Option<char>) -> Token {
        let from = self.i;
        let escapes = (c == 'E' || c == 'e') && next == Some('\'');
        let token = if c == '\'' || escapes {
            if escapes {
                self.i += 1;
            }
            let (text, end) = quoted(self.chars, self.i, '\'', escapes);
            self.i = end;
            Token::Str(text)
        } else if let Some(tag) = (c == '$').then(|| dollar_tag(self.chars, self.i)).flatten() {
            self.body(&tag)
        } else if c == '"' || c.is_alphabetic() || c == '_' {
            self.name()
        } else if c.is_ascii_digit() {
            let mut number = String::new();
            while self.i < self.chars.len()
                && (self.chars[self.i].is_ascii_alphanumeric() || self.chars[self.i] == '.')
            {
                number.push(self.chars[self.i]);
                self.i += 1;
            }
            Token::Word(number)
        } else {
            self.i += 1;
            Token::Punct(c)
        };
        self.bump_lines(from);
        token
    }

    /// A dollar-quoted body opened by `tag` at the current position.
    fn body(&mut self, tag: &[char]) -> Token {
        let chars = self.chars;
        let body_start = self.i + tag.len();
        let mut end = body_start;
        while end < chars.len() && !chars[end..].starts_with(tag) {
            end += 1;
        }
        self.i = (end + tag.len()).min(chars.len());
        Token::Body(chars[body_start..end].iter().collect())
    }

    /// A keyword or name, possibly qualified, each part possibly quoted.
    fn name(&mut self) -> Token {
        let chars = self.chars;
        let mut name = String::new();
        loop {
            if self.i < chars.len() && chars[self.i] == '"' {
                let (text, end) = quoted(chars, self.i, '"', false);
                name.push_str(&text);
                self.i = end;
            } else {
                while self.i < chars.len()
                    && (chars[self.i].is_alphanumeric()
                        || chars[self.i] == '_'
                        || chars[self.i] == '$')
                {
                    name.push(chars[self.i].to_ascii_uppercase());
                    self.i += 1;
                }
            }
            let i = self.i;
            let qualified = i + 1 < chars.len()
                && chars[i] == '.'
                && (chars[i + 1] == '"' || chars[i + 1].is_alphabetic() || chars[i + 1] == '_');
            if !qualified {
                break;
            }
            name.push('.');
            self.i += 1;
        }
        Token::Word(name)
    }
}

/// A quoted run starting at `chars[at]` (the quote): its contents and the index after it.
fn quoted(chars: &[char], at: usize, quote: char, escapes: bool) -> (String, usize) {
    let mut text = String::new();
    let mut i = at + 1;
    while i < chars.len() {
        if escapes && chars[i] == '\\' {
            text.extend(chars.get(i + 1));
            i += 2;
        } else if chars[i] == quote {
            if chars.get(i + 1) == Some(&quote) {
                text.push(quote);
                i += 2;
            } else {
                return (text, i + 1);
            }
        } else {
            text.push(chars[i]);
            i += 1;
        }
    }
    (text, i)
}

/// `$tag$` at `chars[at]`, if one starts there (`$1` is a parameter, not a quote).
fn dollar_tag(chars: &[char], at: usize) -> Option<Vec<char>> {
    let mut i = at + 1;
    while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
        if i == at + 1 && chars[i].is_ascii_digit() {
            return None;
        }
        i += 1;
    }
    (chars.get(i) == Some(&'$')).then(|| chars[at..=i].to_vec())
}
