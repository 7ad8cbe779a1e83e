//! Which statements contract the schema, and why.

use std::collections::{BTreeSet, HashSet};

use super::lexer::{split, Statement, Token};

/// Names of what this migration itself creates (plain `CREATE`, not `OR REPLACE` or
/// `IF NOT EXISTS`, which may meet an object old code already uses).
pub(super) fn created_objects(statements: &[Statement]) -> HashSet<String> {
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

pub(super) fn classify(
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
    top_level_parts(&s.tokens[i + 1..])
        .into_iter()
        .filter_map(|action| alter_action(action, &table, &name, added))
        .collect()
}

/// One action of `ALTER TABLE table` (`name`: the table as messages show it).
fn alter_action(
    action: &[Token],
    table: &str,
    name: &str,
    added: &mut HashSet<(String, String)>,
) -> Option<String> {
    let w = words(action);
    match w.first().copied() {
        Some("RENAME") => Some(format!(
            "renames in {name}: the release before it uses the old name"
        )),
        Some("SET") if w.get(1) == Some(&"SCHEMA") => Some(format!(
            "moves {name} to another schema: the release before it uses the old name"
        )),
        Some("DROP") if w.get(1) == Some(&"CONSTRAINT") => Some(format!(
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
            Some(format!(
                "drops column {name}.{}: the release before it may still read or write it",
                column.to_lowercase()
            ))
        }
        Some("ALTER") => alter_column(&w, name),
        Some("ADD") => add_to_table(action, table, added),
        Some("ENABLE" | "FORCE") if w.contains(&"SECURITY") => Some(format!(
            "turns on row-level security for {name}: the release before it may read or \
             write rows the policies now hide"
        )),
        _ => None,
    }
}

/// `ALTER [COLUMN] column ...`: what tightens or retypes the column.
fn alter_column(w: &[&str], name: &str) -> Option<String> {
    let at = if w.get(1) == Some(&"COLUMN") { 2 } else { 1 };
    let column = w.get(at).unwrap_or(&"?").to_lowercase();
    let change = w.get(at + 1..).unwrap_or_default();
    if change.starts_with(&["SET", "NOT"]) {
        Some(format!(
            "sets {name}.{column} NOT NULL: the release before it may write NULL"
        ))
    } else if change.starts_with(&["DROP", "DEFAULT"]) {
        Some(format!(
            "drops the default of {name}.{column}: the release before it may \
             insert without naming it"
        ))
    } else if change.starts_with(&["TYPE"]) || change.starts_with(&["SET", "DATA"]) {
        Some(format!(
            "changes the type of {name}.{column}: the release before it reads and \
             writes the old type (and the table is rewritten under an exclusive lock)"
        ))
    } else {
        None
    }
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
