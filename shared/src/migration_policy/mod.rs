//! The migration policy's check (docs/migrations.md): a migration may only *expand* the schema,
//! so the release before it keeps working while it is applied and until the new code is
//! deployed everywhere. A statement that drops, renames or retypes something, removes a
//! privilege or default, or tightens what may be written (NOT NULL, a constraint, a unique
//! index, row-level security, a refusing trigger) on a table that existed before the migration
//! is a *contract* step: refused unless the migration carries a marker naming the earlier
//! migration whose release stopped needing what it removes:
//!
//! ```sql
//! -- contract: 20261201000010_member_soft_delete
//! ```
//!
//! The migrations checked in before the policy are grandfathered by name and checksum (the
//! SHA-384 sqlx records in `_sqlx_migrations.checksum`), so editing one is refused as well.
//!
//! The check reads SQL as tokens, not as a grammar: it knows the statements this project
//! writes and errs on the side of refusing. Function bodies are not executed by a migration
//! and are not inspected; `DO` blocks are (including the strings they `EXECUTE`).

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha384};

/// The migrations that predate the policy: file name and SHA-384 of its contents. Frozen: a
/// later migration is never added here, and these files are never edited again.
pub const GRANDFATHERED: &[(&str, &str)] = &[
    ("20261125000001_schemas_roles.sql", "1add70380551a32d3ab50151645cfac8663de731a6475aa7522bc62439e041a5ba17b6f8f7c564a45522a00af9892c2f"),
    ("20261125000002_members_events.sql", "fdd34bec7a88e1d40f2f2e9114d739e8cb41eec4ac608f994e1ea106cacb553f954ad25a2e9c129febbc8894e982fd27"),
    ("20261125000003_elections.sql", "d9d903c107af51d1bfb28fb5308c00154020860f85cbf28c366c2290f06a95a7b7cff709219173653a561671ba2f6aac"),
    ("20261125000004_ops.sql", "aa7e567588f9d386df0f4416fccde47eba375f9b2ea0317bbc81f5784a650f323ae6901310dac6fffc1cde198b363e4a"),
    ("20261126000005_member_login.sql", "d068a2032672507069eddbaf60d7d2607fd1d2891682b56cc0f64a7d4ad8fdcd1486dac37739c3f7687c5bee55adc273"),
    ("20261126000006_batch_writer.sql", "2a388455df93a1e076bb3b08b6ac7fabc21e69ba171a30630f55bea7316d628a6f6c01f7f7961a212ad18559652ab45e"),
    ("20261126000007_direct_vote.sql", "69f4d9e5de6cfef6ccc8d465e72ac64a857965834268db96721065ae68212ee6ea9302e2521c0966637dd1a45b0a38e6"),
    ("20261201000008_vote_integrity.sql", "a6ae2e4941f5e96e21a1aa8cea4846418ece5b06420a799dfea65ef119f6f29447c56164355b96592d9da5a23c32232e"),
    ("20261201000009_s2s_nonces.sql", "99e9e7511118d2ffa009ef8460f1a4e96cc0cb11ef81cff9f1e3bdefff17d256f498d508b868ce9ec904ebdb0c8da9a6"),
    ("20261201000010_member_soft_delete.sql", "afb92b1e8bf5fc64c8805e1829a5f0a08269adc91a273383980d63fb45b9688583876cb650ee6f5c216f70b8998df10c"),
    ("20261201000011_token_slots.sql", "605ce3e4906370a5fd16ee44e0a8ed32e39229d1c8faf45c6e23e388f4c57502e215f40d839edabfe3c6854ca3a8a944"),
    ("20261201000012_member_active.sql", "9e57792d64a9d3f30f6e654deb0487295d46bef21f733b8deeffdb4be757405405a20e0d6a435e88b42356df23890fc1"),
    ("20261201000013_platform_ops.sql", "9ffb1534b9d714f0132df18599b0a30e1b2cd013df12e59a31605a0b7a9be10af2e1e144b7298e61af22dc5533d38ab5"),
];

/// What a statement does that the release before it may not survive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contraction {
    /// 1-based line of the statement in its file.
    pub line: usize,
    /// What it does, in words (e.g. "drops column ...").
    pub what: String,
}

/// A migration file's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Contract statements without a marker.
    Refused {
        file: String,
        contractions: Vec<Contraction>,
    },
    /// A marker that names no earlier migration.
    BadMarker { file: String, reason: String },
    /// A grandfathered migration whose contents changed.
    Edited { file: String },
    /// A grandfathered migration that is gone.
    Missing { file: String },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused { file, contractions } => {
                for c in contractions {
                    writeln!(f, "{file}:{}: {}", c.line, c.what)?;
                }
                write!(
                    f,
                    "{file}: refused: a contract step needs `-- contract: <earlier migration>` \
                     naming the expand step whose release stopped needing what it removes \
                     (docs/migrations.md)"
                )
            }
            Self::BadMarker { file, reason } => write!(f, "{file}: refused: {reason}"),
            Self::Edited { file } => write!(
                f,
                "{file}: refused: this migration predates the policy and is frozen (its checksum \
                 changed; databases that ran it would refuse to start migrations); write a new one"
            ),
            Self::Missing { file } => write!(
                f,
                "{file}: refused: a migration checked in before the policy is missing (databases \
                 that ran it would refuse to migrate)"
            ),
        }
    }
}

/// Checks every migration in `dir` (`<version>_<description>.sql`); no finding means it passes.
pub fn check_dir(dir: &Path) -> std::io::Result<Vec<Finding>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_file() && version_of(&name).is_some() {
            files.push((name, std::fs::read_to_string(entry.path())?));
        }
    }
    files.sort();
    Ok(check_files(&files))
}

/// Checks a migration set given as (file name, contents), e.g. sqlx's embedded migrations.
pub fn check_files(files: &[(String, String)]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let present: HashSet<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for (name, _) in GRANDFATHERED {
        if !present.contains(name) {
            findings.push(Finding::Missing {
                file: name.to_string(),
            });
        }
    }
    for (name, sql) in files {
        if let Some((_, checksum)) = GRANDFATHERED.iter().find(|(n, _)| n == name) {
            if hex::encode(Sha384::digest(sql.as_bytes())) != *checksum {
                findings.push(Finding::Edited { file: name.clone() });
            }
            continue;
        }
        let markers = contract_markers(sql);
        if markers.is_empty() {
            let contractions = contractions(sql);
            if !contractions.is_empty() {
                findings.push(Finding::Refused {
                    file: name.clone(),
                    contractions,
                });
            }
            continue;
        }
        let Some(version) = version_of(name) else {
            continue;
        };
        for marker in markers {
            let named = files
                .iter()
                .find(|(n, _)| n.strip_suffix(".sql") == Some(marker.as_str()));
            let reason = match named {
                None => Some(format!(
                    "its marker names `{marker}`, which is not a migration here \
                     (write the file name without `.sql`)"
                )),
                Some((n, _)) if version_of(n).is_some_and(|v| v >= version) => Some(format!(
                    "its marker names `{marker}`, which is not earlier: the expand step \
                     ships in an earlier release than its contract step"
                )),
                Some(_) => None,
            };
            if let Some(reason) = reason {
                findings.push(Finding::BadMarker {
                    file: name.clone(),
                    reason,
                });
            }
        }
    }
    findings
}

/// The migrations a `-- contract: <version>_<description>` line names.
pub fn contract_markers(sql: &str) -> Vec<String> {
    sql.lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix("--")?.trim();
            let named = rest.strip_prefix("contract:")?.trim();
            Some(named.trim_end_matches(".sql").to_owned())
        })
        .collect()
}

/// The version sqlx reads from a file name (`<digits>_<description>.sql`).
fn version_of(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".sql")?;
    let (version, description) = stem.split_once('_')?;
    (!description.is_empty() && version.bytes().all(|b| b.is_ascii_digit()))
        .then(|| version.parse().ok())
        .flatten()
}

/// Every statement of `sql` that contracts the schema, ignoring markers.
pub fn contractions(sql: &str) -> Vec<Contraction> {
    let statements = split(sql);
    let created = created_objects(&statements);
    let mut added_columns: HashSet<(String, String)> = HashSet::new();
    let mut found = Vec::new();
    for statement in &statements {
        for what in classify(statement, &created, &mut added_columns) {
            found.push(Contraction {
                line: statement.line,
                what,
            });
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Tokens and statements
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A keyword or (possibly qualified) name, upper-cased; quoted parts keep their case.
    Word(String),
    /// A string literal's contents.
    Str(String),
    /// A dollar-quoted body (a function's or a `DO` block's).
    Body(String),
    Punct(char),
}

struct Statement {
    line: usize,
    tokens: Vec<Token>,
}

impl Statement {
    fn word(&self, i: usize) -> Option<&str> {
        match self.tokens.get(i) {
            Some(Token::Word(w)) => Some(w),
            _ => None,
        }
    }

    fn words_from(&self, i: usize) -> impl Iterator<Item = &str> {
        self.tokens[i.min(self.tokens.len())..]
            .iter()
            .filter_map(|t| match t {
                Token::Word(w) => Some(w.as_str()),
                _ => None,
            })
    }

    fn starts_with(&self, words: &[&str]) -> bool {
        words
            .iter()
            .enumerate()
            .all(|(i, w)| self.word(i) == Some(w))
    }
}

/// Splits SQL into statements at top-level semicolons, dropping comments.
fn split(sql: &str) -> Vec<Statement> {
    let chars: Vec<char> = sql.chars().collect();
    let mut statements = Vec::new();
    let mut tokens = Vec::new();
    let mut start_line = 1;
    let mut line = 1;
    let mut i = 0;
    let bump_lines = |from: usize, to: usize, line: &mut usize| {
        *line += chars[from..to.min(chars.len())]
            .iter()
            .filter(|c| **c == '\n')
            .count();
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '-' && next == Some('-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let (from, mut depth) = (i, 0);
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            bump_lines(from, i, &mut line);
        } else if c == ';' {
            if !tokens.is_empty() {
                statements.push(Statement {
                    line: start_line,
                    tokens: std::mem::take(&mut tokens),
                });
            }
            i += 1;
        } else {
            if tokens.is_empty() {
                start_line = line;
            }
            let from = i;
            let escapes = (c == 'E' || c == 'e') && next == Some('\'');
            if c == '\'' || escapes {
                if escapes {
                    i += 1;
                }
                let (text, end) = quoted(&chars, i, '\'', escapes);
                tokens.push(Token::Str(text));
                i = end;
            } else if c == '$' && dollar_tag(&chars, i).is_some() {
                let tag = dollar_tag(&chars, i).unwrap_or_default();
                let body_start = i + tag.len();
                let mut end = body_start;
                while end < chars.len() && !chars[end..].starts_with(&tag) {
                    end += 1;
                }
                tokens.push(Token::Body(chars[body_start..end].iter().collect()));
                i = (end + tag.len()).min(chars.len());
            } else if c == '"' || c.is_alphabetic() || c == '_' {
                let mut name = String::new();
                loop {
                    if i < chars.len() && chars[i] == '"' {
                        let (text, end) = quoted(&chars, i, '"', false);
                        name.push_str(&text);
                        i = end;
                    } else {
                        while i < chars.len()
                            && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
                        {
                            name.push(chars[i].to_ascii_uppercase());
                            i += 1;
                        }
                    }
                    let qualified = i + 1 < chars.len()
                        && chars[i] == '.'
                        && (chars[i + 1] == '"'
                            || chars[i + 1].is_alphabetic()
                            || chars[i + 1] == '_');
                    if !qualified {
                        break;
                    }
                    name.push('.');
                    i += 1;
                }
                tokens.push(Token::Word(name));
            } else if c.is_ascii_digit() {
                let mut number = String::new();
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    number.push(chars[i]);
                    i += 1;
                }
                tokens.push(Token::Word(number));
            } else {
                tokens.push(Token::Punct(c));
                i += 1;
            }
            bump_lines(from, i, &mut line);
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

// ---------------------------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------------------------

/// Names of what this migration itself creates (plain `CREATE`, not `OR REPLACE` or
/// `IF NOT EXISTS`, which may meet an object old code already uses).
fn created_objects(statements: &[Statement]) -> HashSet<String> {
    let mut created = HashSet::new();
    for s in statements {
        if s.word(0) != Some("CREATE") {
            continue;
        }
        let mut i = 1;
        while matches!(s.word(i), Some("UNLOGGED" | "TEMP" | "TEMPORARY")) {
            i += 1;
        }
        let kind = s.word(i);
        if !matches!(
            kind,
            Some("TABLE" | "FUNCTION" | "PROCEDURE" | "SCHEMA" | "SEQUENCE" | "VIEW" | "TYPE")
        ) || s.word(i + 1) == Some("IF")
        {
            continue;
        }
        if let Some(name) = s.word(i + 1) {
            created.insert(name.to_owned());
        }
    }
    created
}

fn is_created(name: &str, created: &HashSet<String>) -> bool {
    created.contains(name)
        || (!name.contains('.') && created.iter().any(|c| c.rsplit('.').next() == Some(name)))
}

fn classify(
    s: &Statement,
    created: &HashSet<String>,
    added: &mut HashSet<(String, String)>,
) -> Vec<String> {
    match s.word(0) {
        Some("DROP") => {
            let kind = s.word(1).unwrap_or("");
            if kind == "INDEX" {
                Vec::new()
            } else {
                let kind = if kind == "MATERIALIZED" {
                    "materialized view"
                } else {
                    kind
                };
                vec![format!(
                    "drops {} {}: the release before it may still use it",
                    kind.to_lowercase(),
                    object_after(s, 2)
                )]
            }
        }
        Some("TRUNCATE") => vec![format!("truncates {}", object_after(s, 1))],
        Some("ALTER") if s.word(1) == Some("TABLE") => alter_table(s, created, added),
        Some("ALTER") if s.starts_with(&["ALTER", "DEFAULT", "PRIVILEGES"]) => Vec::new(),
        Some("ALTER") => {
            let renames = s
                .words_from(2)
                .collect::<Vec<_>>()
                .windows(2)
                .any(|w| w[0] == "RENAME" || w == ["SET", "SCHEMA"]);
            if renames {
                vec![format!(
                    "renames or moves {} {}: the release before it uses the old name",
                    s.word(1).unwrap_or("").to_lowercase(),
                    object_after(s, 2)
                )]
            } else {
                Vec::new()
            }
        }
        Some("REVOKE") => revoke(s, created),
        Some("CREATE") => create(s, created),
        Some("DO") => s
            .tokens
            .iter()
            .filter_map(|t| match t {
                Token::Body(body) => Some(body),
                _ => None,
            })
            .flat_map(|body| nested(body, created, added))
            .collect(),
        _ => Vec::new(),
    }
}

/// The statements inside a `DO` block (each also after the block words that may precede it),
/// and the strings it may `EXECUTE`.
fn nested(
    body: &str,
    created: &HashSet<String>,
    added: &mut HashSet<(String, String)>,
) -> Vec<String> {
    let mut found = BTreeSet::new();
    for inner in split(body) {
        let starts = std::iter::once(0)
            .chain(inner.tokens.iter().enumerate().filter_map(|(i, t)| {
            matches!(t, Token::Word(w) if matches!(w.as_str(), "BEGIN" | "THEN" | "ELSE" | "LOOP"))
                .then_some(i + 1)
        }));
        for start in starts {
            let tail = Statement {
                line: inner.line,
                tokens: inner.tokens[start..].to_vec(),
            };
            found.extend(classify(&tail, created, added));
        }
        for token in &inner.tokens {
            if let Token::Str(text) = token {
                for dynamic in split(text) {
                    found.extend(classify(&dynamic, created, added));
                }
            }
        }
    }
    found.into_iter().collect()
}

/// The object named at token `i` (skipping `IF EXISTS`, `ONLY`, `CONCURRENTLY`), for messages.
fn object_after(s: &Statement, mut i: usize) -> String {
    while matches!(
        s.word(i),
        Some("IF" | "EXISTS" | "ONLY" | "CONCURRENTLY" | "VIEW" | "TABLE")
    ) {
        i += 1;
    }
    s.word(i).unwrap_or("?").to_lowercase()
}

/// Splits tokens at top-level commas (outside parentheses).
fn top_level_parts(tokens: &[Token]) -> Vec<&[Token]> {
    let (mut parts, mut depth, mut from) = (Vec::new(), 0i32, 0);
    for (i, t) in tokens.iter().enumerate() {
        match t {
            Token::Punct('(') => depth += 1,
            Token::Punct(')') => depth -= 1,
            Token::Punct(',') if depth == 0 => {
                parts.push(&tokens[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&tokens[from..]);
    parts
}

fn words(tokens: &[Token]) -> Vec<&str> {
    tokens
        .iter()
        .filter_map(|t| match t {
            Token::Word(w) => Some(w.as_str()),
            _ => None,
        })
        .collect()
}

fn has_pair(words: &[&str], a: &str, b: &str) -> bool {
    words.windows(2).any(|w| w[0] == a && w[1] == b)
}

fn alter_table(
    s: &Statement,
    created: &HashSet<String>,
    added: &mut HashSet<(String, String)>,
) -> Vec<String> {
    let mut i = 2;
    while matches!(s.word(i), Some("IF" | "EXISTS" | "ONLY")) {
        i += 1;
    }
    let Some(table) = s.word(i).map(str::to_owned) else {
        return Vec::new();
    };
    if is_created(&table, created) {
        // Nothing older can use a table this migration creates.
        return Vec::new();
    }
    let name = table.to_lowercase();
    let mut found = Vec::new();
    for action in top_level_parts(&s.tokens[i + 1..]) {
        let w = words(action);
        match w.first().copied() {
            Some("RENAME") => found.push(format!(
                "renames in {name}: the release before it uses the old name"
            )),
            Some("SET") if w.get(1) == Some(&"SCHEMA") => found.push(format!(
                "moves {name} to another schema: the release before it uses the old name"
            )),
            Some("DROP") if w.get(1) == Some(&"CONSTRAINT") => found.push(format!(
                "drops constraint {} of {name}: the release before it may rely on it \
                 (ON CONFLICT needs its unique key; a check guards what it reads)",
                w.iter()
                    .skip(2)
                    .find(|x| !matches!(**x, "IF" | "EXISTS"))
                    .unwrap_or(&"?")
                    .to_lowercase()
            )),
            Some("DROP") => {
                let column = w
                    .iter()
                    .skip(1)
                    .find(|x| !matches!(**x, "COLUMN" | "IF" | "EXISTS"))
                    .unwrap_or(&"?");
                found.push(format!(
                    "drops column {name}.{}: the release before it may still read or write it",
                    column.to_lowercase()
                ));
            }
            Some("ALTER") => {
                let at = if w.get(1) == Some(&"COLUMN") { 2 } else { 1 };
                let column = w.get(at).unwrap_or(&"?").to_lowercase();
                let change = w.get(at + 1..).unwrap_or_default();
                if change.starts_with(&["SET", "NOT"]) {
                    found.push(format!(
                        "sets {name}.{column} NOT NULL: the release before it may write NULL"
                    ));
                } else if change.starts_with(&["DROP", "DEFAULT"]) {
                    found.push(format!(
                        "drops the default of {name}.{column}: the release before it may \
                         insert without naming it"
                    ));
                } else if change.starts_with(&["TYPE"]) || change.starts_with(&["SET", "DATA"]) {
                    found.push(format!(
                        "changes the type of {name}.{column}: the release before it reads and \
                         writes the old type (and the table is rewritten under an exclusive lock)"
                    ));
                }
            }
            Some("ADD") => {
                if let Some(what) = add_to_table(action, &table, added) {
                    found.push(what);
                }
            }
            Some("ENABLE" | "FORCE") if w.contains(&"SECURITY") => {
                found.push(format!(
                    "turns on row-level security for {name}: the release before it may read or \
                     write rows the policies now hide"
                ));
            }
            _ => {}
        }
    }
    found
}

const CONSTRAINT_WORDS: &[&str] = &[
    "CONSTRAINT",
    "PRIMARY",
    "UNIQUE",
    "CHECK",
    "FOREIGN",
    "EXCLUDE",
];

/// `ADD COLUMN …` or `ADD CONSTRAINT …` in `ALTER TABLE table`.
fn add_to_table(
    action: &[Token],
    table: &str,
    added: &mut HashSet<(String, String)>,
) -> Option<String> {
    let w = words(action);
    let name = table.to_lowercase();
    let is_constraint = w.get(1).is_some_and(|x| CONSTRAINT_WORDS.contains(x));
    if !is_constraint {
        let column = w
            .iter()
            .skip(1)
            .find(|x| !matches!(**x, "COLUMN" | "IF" | "NOT" | "EXISTS"))?
            .to_string();
        added.insert((table.to_owned(), column.clone()));
        let column = column.to_lowercase();
        let not_null = has_pair(&w, "NOT", "NULL");
        if w.contains(&"PRIMARY")
            || (not_null && !w.contains(&"DEFAULT") && !w.contains(&"GENERATED"))
        {
            return Some(format!(
                "adds {name}.{column} NOT NULL without a default: the release before it inserts \
                 rows without it"
            ));
        }
        return None;
    }
    // A constraint that only names columns this migration added cannot refuse what the
    // release before it writes: that release never sets them (they take their defaults,
    // which the migration itself checked against every existing row).
    let named: BTreeSet<String> = action
        .iter()
        .skip_while(|t| !matches!(t, Token::Punct('(')))
        .take_while(|t| !matches!(t, Token::Word(w) if w == "REFERENCES"))
        .filter_map(|t| match t {
            Token::Word(w) if !EXPRESSION_WORDS.contains(&w.as_str()) => Some(w.clone()),
            _ => None,
        })
        .filter(|w| !w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .collect();
    let only_new = !named.is_empty()
        && !w.contains(&"EXCLUDE")
        && named
            .iter()
            .all(|c| added.contains(&(table.to_owned(), c.clone())));
    (!only_new).then(|| {
        format!(
            "adds a constraint to {name}, which exists already: the release before it may write \
             rows it refuses"
        )
    })
}

/// Words of a check expression that are not column names.
const EXPRESSION_WORDS: &[&str] = &[
    "AND",
    "OR",
    "NOT",
    "NULL",
    "IS",
    "IN",
    "BETWEEN",
    "TRUE",
    "FALSE",
    "LIKE",
    "ILIKE",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "KEY",
    "NOT",
    "VALID",
    "DEFERRABLE",
    "INITIALLY",
    "DEFERRED",
    "IMMEDIATE",
];

fn revoke(s: &Statement, created: &HashSet<String>) -> Vec<String> {
    let Some(on) = s.tokens.iter().position(|t| *t == Token::Word("ON".into())) else {
        return vec!["revokes a role membership: the release before it may use it".into()];
    };
    let Some(from) = s
        .tokens
        .iter()
        .position(|t| *t == Token::Word("FROM".into()))
    else {
        return Vec::new();
    };
    let mut objects = Vec::new();
    let mut depth = 0;
    for t in &s.tokens[on + 1..from] {
        match t {
            Token::Punct('(') => depth += 1,
            Token::Punct(')') => depth -= 1,
            Token::Word(w)
                if depth == 0
                    && !matches!(
                        w.as_str(),
                        "TABLE" | "FUNCTION" | "PROCEDURE" | "ROUTINE" | "SEQUENCE" | "SCHEMA"
                    ) =>
            {
                objects.push(w.clone())
            }
            _ => {}
        }
    }
    let all_new = !objects.is_empty()
        && !objects.iter().any(|o| o == "ALL")
        && objects.iter().all(|o| is_created(o, created));
    if all_new {
        Vec::new()
    } else {
        vec![format!(
            "revokes a privilege on {}: the release before it may use it",
            objects.join(", ").to_lowercase()
        )]
    }
}

fn create(s: &Statement, created: &HashSet<String>) -> Vec<String> {
    let w: Vec<&str> = s.words_from(0).collect();
    // CREATE UNIQUE INDEX [CONCURRENTLY] [IF NOT EXISTS] [name] ON [ONLY] table
    if w.get(1) == Some(&"UNIQUE") {
        let on = w.iter().position(|x| *x == "ON");
        let table = on.and_then(|i| w[i + 1..].iter().find(|x| **x != "ONLY"));
        if let Some(table) = table {
            if !is_created(table, created) {
                return vec![format!(
                    "adds a unique index to {}, which exists already: the release before it \
                     may write duplicates",
                    table.to_lowercase()
                )];
            }
        }
        return Vec::new();
    }
    // CREATE [OR REPLACE] [CONSTRAINT] TRIGGER name BEFORE|AFTER ... ON table
    let trigger = w.iter().position(|x| *x == "TRIGGER").filter(|t| {
        w[1..*t]
            .iter()
            .all(|x| matches!(*x, "OR" | "REPLACE" | "CONSTRAINT"))
    });
    if let Some(t) = trigger {
        let refusing = w[..t].contains(&"CONSTRAINT") || w.get(t + 2) == Some(&"BEFORE");
        let on = w.iter().position(|x| *x == "ON");
        if let Some(table) = on.and_then(|i| w.get(i + 1)) {
            if refusing && !is_created(table, created) {
                return vec![format!(
                    "adds a trigger that can refuse writes to {}, which exists already",
                    table.to_lowercase()
                )];
            }
        }
        return Vec::new();
    }
    // CREATE POLICY name ON table AS RESTRICTIVE
    if w.get(1) == Some(&"POLICY") && has_pair(&w, "AS", "RESTRICTIVE") {
        if let Some(table) = w.get(4) {
            if !is_created(table, created) {
                return vec![format!(
                    "adds a restrictive policy to {}, which exists already: the release before \
                     it may read or write rows it hides",
                    table.to_lowercase()
                )];
            }
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whats(sql: &str) -> Vec<String> {
        contractions(sql).into_iter().map(|c| c.what).collect()
    }

    fn refused(sql: &str) -> bool {
        !contractions(sql).is_empty()
    }

    /// The statements the policy refuses, each alone in a migration.
    #[test]
    fn contract_statements_are_refused() {
        for sql in [
            "DROP TABLE elections.receipts;",
            "drop table if exists elections.receipts cascade;",
            "DROP FUNCTION elections.drained(uuid, timestamptz, interval);",
            "DROP SCHEMA ops CASCADE;",
            "DROP VIEW ops.v;",
            "DROP POLICY tenant ON elections.ballots;",
            "ALTER TABLE elections.receipts DROP COLUMN reason;",
            "ALTER TABLE elections.receipts DROP reason;",
            "ALTER TABLE ONLY elections.receipts DROP COLUMN IF EXISTS reason;",
            "ALTER TABLE elections.receipts DROP CONSTRAINT receipts_pkey;",
            "ALTER TABLE elections.receipts RENAME COLUMN reason TO why;",
            "ALTER TABLE elections.receipts RENAME reason TO why;",
            "ALTER TABLE elections.receipts RENAME TO outcomes;",
            "ALTER TABLE elections.receipts SET SCHEMA ops;",
            "ALTER FUNCTION elections.drained(uuid, timestamptz, interval) RENAME TO is_drained;",
            "ALTER SCHEMA ops RENAME TO operations;",
            "ALTER TABLE elections.receipts ALTER COLUMN reason SET NOT NULL;",
            "ALTER TABLE elections.receipts ALTER reason SET NOT NULL;",
            "ALTER TABLE elections.receipts ALTER COLUMN reason TYPE varchar(40);",
            "ALTER TABLE elections.receipts ALTER COLUMN reason SET DATA TYPE varchar(40);",
            "ALTER TABLE events.elections ALTER COLUMN status DROP DEFAULT;",
            "ALTER TABLE elections.receipts ADD CONSTRAINT short CHECK (length(reason) < 40);",
            "ALTER TABLE elections.receipts ADD CONSTRAINT short CHECK (length(reason) < 40) NOT VALID;",
            "ALTER TABLE elections.receipts ADD CHECK (reason <> '');",
            "ALTER TABLE elections.receipts ADD UNIQUE (org_id, reason);",
            "ALTER TABLE elections.ballots ADD FOREIGN KEY (election_id) REFERENCES elections.elections (id);",
            "ALTER TABLE elections.ballots ADD CONSTRAINT ballots_election_id_fkey FOREIGN KEY (election_id) REFERENCES elections.elections (id);",
            "ALTER TABLE elections.receipts ADD COLUMN seen boolean NOT NULL;",
            "ALTER TABLE elections.receipts ADD COLUMN n bigint PRIMARY KEY;",
            "CREATE UNIQUE INDEX receipts_reason ON elections.receipts (reason);",
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS r ON ONLY elections.receipts (reason);",
            "REVOKE DELETE ON members.members FROM ekklesia_members;",
            "REVOKE UPDATE (used) ON elections.voting_tokens FROM ekklesia_worker;",
            "REVOKE EXECUTE ON FUNCTION public.app_org_id() FROM PUBLIC;",
            "REVOKE ALL ON ALL TABLES IN SCHEMA elections FROM ekklesia_ingest;",
            "REVOKE ekklesia_ingest FROM ingest_dev;",
            "ALTER TABLE ops.worker_progress ENABLE ROW LEVEL SECURITY;",
            "ALTER TABLE ops.worker_progress FORCE ROW LEVEL SECURITY;",
            "CREATE POLICY only_some ON elections.receipts AS RESTRICTIVE USING (false);",
            "CREATE TRIGGER refuse BEFORE INSERT ON elections.receipts FOR EACH ROW EXECUTE FUNCTION f();",
            "CREATE CONSTRAINT TRIGGER c AFTER INSERT ON elections.receipts FOR EACH ROW EXECUTE FUNCTION f();",
            "TRUNCATE elections.accepted_votes;",
            "DO $$ BEGIN EXECUTE 'DROP TABLE ops.s2s_nonces'; END $$;",
            "DO $body$ BEGIN ALTER TABLE ops.s2s_nonces DROP COLUMN seen_at; END $body$;",
            // Several actions in one ALTER TABLE: the second one contracts.
            "ALTER TABLE elections.receipts ADD COLUMN note text, DROP COLUMN reason;",
        ] {
            assert!(refused(sql), "not refused: {sql}");
        }
    }

    /// What expands the schema, or only touches what the same migration creates, passes.
    #[test]
    fn expand_statements_pass() {
        for sql in [
            "CREATE TABLE ops.t (id bigint PRIMARY KEY, v text NOT NULL CHECK (v <> ''));",
            "ALTER TABLE elections.receipts ADD COLUMN note text;",
            "ALTER TABLE elections.receipts ADD COLUMN IF NOT EXISTS note text;",
            "ALTER TABLE elections.receipts ADD COLUMN seen boolean NOT NULL DEFAULT false;",
            "ALTER TABLE elections.receipts ADD COLUMN note text CHECK (note <> '') REFERENCES ops.notes (id);",
            "ALTER TABLE elections.receipts ALTER COLUMN reason DROP NOT NULL;",
            "ALTER TABLE elections.receipts ALTER COLUMN reason SET DEFAULT 'x';",
            "ALTER TABLE elections.voting_tokens SET (fillfactor = 70);",
            "CREATE INDEX receipts_reason ON elections.receipts (reason);",
            "DROP INDEX elections.receipts_reason;",
            "CREATE OR REPLACE FUNCTION ops.f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;",
            // A function body is not executed by the migration.
            "CREATE FUNCTION ops.g() RETURNS void LANGUAGE plpgsql AS $$ BEGIN DROP TABLE x; END $$;",
            "GRANT SELECT ON elections.receipts TO ekklesia_events;",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA ops REVOKE ALL ON TABLES FROM PUBLIC;",
            "CREATE POLICY tenant ON elections.receipts USING (org_id = app_org_id());",
            "CREATE TRIGGER audit AFTER INSERT ON elections.receipts FOR EACH ROW EXECUTE FUNCTION f();",
            "DO $$ BEGIN EXECUTE format('CREATE ROLE %I NOLOGIN', 'r'); END $$;",
            "UPDATE events.elections SET slots_registered = 0 WHERE slots_registered IS NULL;",
            // Comments and strings that merely mention a contract are not one.
            "-- DROP TABLE elections.receipts;\nCOMMENT ON TABLE ops.t IS 'never DROP TABLE this';",
            "/* ALTER TABLE x DROP COLUMN y; /* nested */ */ SELECT 1;",
        ] {
            assert_eq!(whats(sql), Vec::<String>::new(), "refused: {sql}");
        }
    }

    /// Tightening a table this migration creates, or columns it adds, breaks no older release.
    #[test]
    fn what_the_migration_itself_creates_may_be_tightened() {
        let sql = "
            CREATE TABLE ops.t (id bigint, note text);
            ALTER TABLE ops.t ADD CONSTRAINT t_pkey PRIMARY KEY (id);
            ALTER TABLE ops.t ALTER COLUMN note SET NOT NULL;
            ALTER TABLE ops.t ENABLE ROW LEVEL SECURITY;
            CREATE UNIQUE INDEX t_note ON ops.t (note);
            CREATE FUNCTION ops.f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;
            REVOKE EXECUTE ON FUNCTION ops.f() FROM PUBLIC;
            REVOKE ALL ON ops.t FROM PUBLIC;
            ALTER TABLE events.elections
                ADD COLUMN slot_key_id text,
                ADD COLUMN slots_registered bigint NOT NULL DEFAULT 0,
                ADD CONSTRAINT slots_keyed CHECK (slots_registered = 0 OR slot_key_id IS NOT NULL);
        ";
        assert_eq!(whats(sql), Vec::<String>::new());
        // The same check on a column that was there before is a tightening.
        assert!(refused(
            "ALTER TABLE events.elections ADD COLUMN k text, \
             ADD CONSTRAINT c CHECK (k IS NOT NULL OR max_choices = 1);"
        ));
        // A function created with OR REPLACE may be one the older release calls.
        assert!(refused(
            "CREATE OR REPLACE FUNCTION ops.f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;
             REVOKE EXECUTE ON FUNCTION ops.f() FROM PUBLIC;"
        ));
    }

    #[test]
    fn findings_name_the_line() {
        let found =
            contractions("-- header\nCREATE TABLE a (x int);\n\nALTER TABLE b\n  DROP COLUMN c;\n");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].line, 4);
        assert!(found[0].what.contains("b.c"), "{}", found[0].what);
    }

    fn grandfathered() -> Vec<(String, String)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/migrations");
        GRANDFATHERED
            .iter()
            .map(|(name, _)| {
                let sql = std::fs::read_to_string(dir.join(name)).expect("read migration");
                (name.to_string(), sql)
            })
            .collect()
    }

    const BAD: &str = "-- Expand? No.\nALTER TABLE members.members DROP COLUMN removed_at;\n";

    #[test]
    fn an_unmarked_contract_step_is_refused() {
        let mut files = grandfathered();
        files.push(("20261210000014_drop_removed_at.sql".into(), BAD.into()));
        let findings = check_files(&files);
        assert_eq!(findings.len(), 1, "{findings:?}");
        let Finding::Refused { file, contractions } = &findings[0] else {
            panic!("{findings:?}");
        };
        assert_eq!(file, "20261210000014_drop_removed_at.sql");
        assert_eq!(contractions[0].line, 2);
        assert!(findings[0].to_string().contains("-- contract:"));
    }

    #[test]
    fn a_contract_step_marked_with_an_earlier_migration_is_accepted() {
        let mut files = grandfathered();
        let marked = format!("-- contract: 20261201000010_member_soft_delete\n{BAD}");
        files.push(("20261210000014_drop_removed_at.sql".into(), marked));
        assert_eq!(check_files(&files), Vec::new());
    }

    #[test]
    fn a_marker_must_name_an_earlier_migration() {
        for (marker, expect) in [
            ("20261201000099_nothing", "not a migration here"),
            ("20261210000014_drop_removed_at", "not earlier"),
            ("20261210000015_later", "not earlier"),
        ] {
            let mut files = grandfathered();
            files.push((
                "20261210000014_drop_removed_at.sql".into(),
                format!("-- contract: {marker}\n{BAD}"),
            ));
            files.push(("20261210000015_later.sql".into(), "SELECT 1;".into()));
            let findings = check_files(&files);
            assert_eq!(findings.len(), 1, "{marker}: {findings:?}");
            assert!(
                findings[0].to_string().contains(expect),
                "{marker}: {}",
                findings[0]
            );
        }
    }

    #[test]
    fn grandfathered_migrations_pass_unchanged_and_are_refused_edited_or_missing() {
        let files = grandfathered();
        assert_eq!(check_files(&files), Vec::new());

        let mut edited = files.clone();
        edited[3]
            .1
            .push_str("\n-- a harmless comment is still an edit\n");
        assert_eq!(
            check_files(&edited),
            vec![Finding::Edited {
                file: "20261125000004_ops.sql".into()
            }]
        );

        let mut missing = files.clone();
        missing.remove(5);
        assert_eq!(
            check_files(&missing),
            vec![Finding::Missing {
                file: "20261126000006_batch_writer.sql".into()
            }]
        );
    }

    /// The grandfathered checksums are the ones sqlx embeds (and stores in `_sqlx_migrations`).
    #[test]
    fn grandfathered_checksums_are_sqlx_checksums() {
        for (name, checksum) in GRANDFATHERED {
            let version = version_of(name).expect("a version");
            let migration = crate::db::MIGRATOR
                .iter()
                .find(|m| m.version == version)
                .expect("embedded");
            assert_eq!(hex::encode(&migration.checksum), *checksum, "{name}");
        }
    }

    /// The repository's own migrations pass (CI runs infra/local/migration-check.sh as well).
    #[test]
    fn the_repository_passes() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/migrations");
        let findings = check_dir(&dir).expect("read infra/migrations");
        assert!(
            findings.is_empty(),
            "{}",
            findings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// What the policy would have said of the grandfathered migrations, had they been new: they
    /// are the reason for the list (and a regression check on the rules).
    #[test]
    fn the_grandfathered_migrations_that_contract_are_the_known_ones() {
        let contracting: Vec<&str> = grandfathered()
            .iter()
            .filter(|(_, sql)| !contractions(sql).is_empty())
            .map(|(name, _)| GRANDFATHERED.iter().find(|(n, _)| n == name).unwrap().0)
            .collect();
        assert_eq!(
            contracting,
            [
                "20261125000001_schemas_roles.sql",
                "20261126000006_batch_writer.sql",
                "20261201000008_vote_integrity.sql",
                "20261201000010_member_soft_delete.sql",
            ]
        );
    }
}
