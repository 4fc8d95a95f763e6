//! The workspace's memory: one SQLite file holding conversations, saved memories and reminders.
//!
//! Full-text recall (FTS5, Porter stemming) works always; vector recall (sqlite-vec, in
//! `vectors.rs`) adds to it when an embedding endpoint is configured. Writes are committed at
//! once (WAL journal), so a killed agent loses nothing it had acknowledged.

use std::path::Path;
use std::sync::Once;

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

/// The schema. `IF NOT EXISTS` everywhere: opening is also migrating from nothing.
const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY, started_at INTEGER NOT NULL, channel TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id),
    role TEXT NOT NULL,            -- user | assistant | tool | reminder
    content TEXT NOT NULL,
    model TEXT,                    -- the model that produced an assistant message
    created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS memories (
    id INTEGER PRIMARY KEY, text TEXT NOT NULL, source TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5(
    text, content='memories', content_rowid='id', tokenize='porter unicode61');
CREATE TRIGGER IF NOT EXISTS memories_ai AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts(rowid, text) VALUES (new.id, new.text); END;
CREATE TRIGGER IF NOT EXISTS memories_ad AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts(memories_fts, rowid, text) VALUES ('delete', old.id, old.text); END;
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(
    content, content='messages', content_rowid='id', tokenize='porter unicode61');
CREATE TRIGGER IF NOT EXISTS messages_ai AFTER INSERT ON messages
    WHEN new.role IN ('user', 'assistant') BEGIN
    INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content); END;
CREATE TABLE IF NOT EXISTS reminders (
    id INTEGER PRIMARY KEY,
    schedule TEXT NOT NULL,        -- as written: every 10m, at 07:30, */5 * * * *, in 1h
    text TEXT NOT NULL,
    next_fire INTEGER,             -- Unix seconds; NULL once a one-shot has fired
    last_fired INTEGER,
    created_at INTEGER NOT NULL);
";

/// Words too common to search for.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "do", "does", "did", "for", "from", "have",
    "how", "i", "in", "is", "it", "me", "my", "of", "on", "or", "please", "tell", "that", "the",
    "this", "to", "was", "what", "when", "where", "which", "who", "why", "with", "you", "your",
    "can", "could", "would", "should", "about", "remember", "recall", "know",
];

/// Now, in Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The memory database.
pub struct Store {
    pub(crate) conn: Connection,
}

/// A recalled memory or past message.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Recalled {
    /// `memory` or `message`.
    pub kind: &'static str,
    /// Row id in its table.
    pub id: i64,
    /// The text.
    pub text: String,
    /// Unix seconds.
    pub created_at: i64,
    /// How it was found: `fts` or `vector`.
    pub how: &'static str,
}

impl Recalled {
    /// The row mapper of a `SELECT id, text, created_at …` over memories or messages.
    fn from_row(
        kind: &'static str,
        how: &'static str,
    ) -> impl Fn(&rusqlite::Row) -> rusqlite::Result<Recalled> {
        move |r| {
            Ok(Recalled {
                kind,
                id: r.get(0)?,
                text: r.get(1)?,
                created_at: r.get(2)?,
                how,
            })
        }
    }
}

/// A stored reminder.
#[derive(Clone, Debug, Serialize)]
pub struct Reminder {
    /// Row id.
    pub id: i64,
    /// The schedule as written.
    pub schedule: String,
    /// What to remind of.
    pub text: String,
    /// Next firing (Unix seconds), None when done.
    pub next_fire: Option<i64>,
}

/// One stored message.
#[derive(Clone, Debug, Serialize)]
pub struct Message {
    /// user, assistant, tool, reminder.
    pub role: String,
    /// The text.
    pub content: String,
    /// Which model wrote it (assistant messages).
    pub model: Option<String>,
}

static VEC_EXTENSION: Once = Once::new();

impl Store {
    /// Opens (creating) the database at `path`. sqlite-vec is registered for every connection.
    pub fn open(path: &Path) -> Result<Store> {
        VEC_EXTENSION.call_once(|| unsafe {
            // sqlite-vec's entry point has SQLite's extension signature; the crate declares it
            // without arguments, hence the cast.
            #[allow(clippy::missing_transmute_annotations)]
            rusqlite::ffi::sqlite3_auto_extension(Some(std::mem::transmute(
                sqlite_vec::sqlite3_vec_init as *const (),
            )));
        });
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("opening the memory database {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)
            .with_context(|| format!("creating the schema in {}", path.display()))?;
        Ok(Store { conn })
    }

    /// A new conversation on `channel` (repl, http, once).
    pub fn new_conversation(&self, channel: &str) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO conversations(started_at, channel) VALUES (?1, ?2)",
            params![now(), channel],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Appends a message to a conversation.
    pub fn add_message(
        &self,
        conversation: i64,
        role: &str,
        content: &str,
        model: Option<&str>,
    ) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO messages(conversation_id, role, content, model, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![conversation, role, content, model, now()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The last `n` user/assistant messages of a conversation, oldest first.
    pub fn recent_messages(&self, conversation: i64, n: usize) -> Result<Vec<Message>> {
        let mut st = self.conn.prepare(
            "SELECT role, content, model FROM messages WHERE conversation_id = ?1 AND role IN ('user','assistant')
             ORDER BY id DESC LIMIT ?2",
        )?;
        let mut v: Vec<Message> = st
            .query_map(params![conversation, n as i64], |r| {
                Ok(Message {
                    role: r.get(0)?,
                    content: r.get(1)?,
                    model: r.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        v.reverse();
        Ok(v)
    }

    /// Saves a memory; returns its id.
    pub fn save_memory(&self, text: &str, source: &str) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO memories(text, source, created_at) VALUES (?1, ?2, ?3)",
            params![text.trim(), source, now()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Deletes a memory (and its vector, if any).
    pub fn forget(&self, id: i64) -> Result<bool> {
        let n = self
            .conn
            .execute("DELETE FROM memories WHERE id = ?1", [id])?;
        if self.has_table("memories_vec")? {
            self.conn
                .execute("DELETE FROM memories_vec WHERE rowid = ?1", [id])?;
        }
        Ok(n > 0)
    }

    /// The newest `n` memories.
    pub fn memories(&self, n: usize) -> Result<Vec<Recalled>> {
        let mut st = self
            .conn
            .prepare("SELECT id, text, created_at FROM memories ORDER BY id DESC LIMIT ?1")?;
        let v = st
            .query_map([n as i64], Recalled::from_row("memory", "list"))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(v)
    }

    /// A memory by id.
    pub fn memory(&self, id: i64) -> Result<Option<Recalled>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, text, created_at FROM memories WHERE id = ?1",
                [id],
                Recalled::from_row("memory", "vector"),
            )
            .optional()?)
    }

    /// Full-text recall: memories first, then past messages (of other conversations than
    /// `exclude`), best bm25 rank first, at most `k` of each.
    pub fn recall_fts(&self, query: &str, k: usize, exclude: Option<i64>) -> Result<Vec<Recalled>> {
        let Some(q) = fts_query(query) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut st = self.conn.prepare(
            "SELECT m.id, m.text, m.created_at FROM memories_fts f JOIN memories m ON m.id = f.rowid
             WHERE memories_fts MATCH ?1 ORDER BY bm25(memories_fts) LIMIT ?2",
        )?;
        for r in st.query_map(params![q, k as i64], Recalled::from_row("memory", "fts"))? {
            out.push(r?);
        }
        let mut st = self.conn.prepare(
            "SELECT m.id, m.role || ': ' || m.content, m.created_at FROM messages_fts f JOIN messages m ON m.id = f.rowid
             WHERE messages_fts MATCH ?1 AND m.conversation_id != ?2 ORDER BY bm25(messages_fts) LIMIT ?3",
        )?;
        for r in st.query_map(
            params![q, exclude.unwrap_or(-1), k as i64],
            Recalled::from_row("message", "fts"),
        )? {
            out.push(r?);
        }
        Ok(out)
    }

    /// Stores a reminder.
    pub fn add_reminder(&self, schedule: &str, text: &str, next_fire: i64) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO reminders(schedule, text, next_fire, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![schedule, text, next_fire, now()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Reminders still to fire, soonest first.
    pub fn reminders(&self) -> Result<Vec<Reminder>> {
        self.query_reminders("WHERE next_fire IS NOT NULL ORDER BY next_fire", [])
    }

    /// Reminders due at `t`.
    pub fn due_reminders(&self, t: i64) -> Result<Vec<Reminder>> {
        self.query_reminders(
            "WHERE next_fire IS NOT NULL AND next_fire <= ?1 ORDER BY next_fire",
            [t],
        )
    }

    fn query_reminders<P: rusqlite::Params>(&self, tail: &str, p: P) -> Result<Vec<Reminder>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT id, schedule, text, next_fire FROM reminders {tail}"
        ))?;
        let v = st
            .query_map(p, |r| {
                Ok(Reminder {
                    id: r.get(0)?,
                    schedule: r.get(1)?,
                    text: r.get(2)?,
                    next_fire: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(v)
    }

    /// Records a firing and the next one (None: done).
    pub fn reminder_fired(&self, id: i64, at: i64, next: Option<i64>) -> Result<()> {
        self.conn.execute(
            "UPDATE reminders SET last_fired = ?2, next_fire = ?3 WHERE id = ?1",
            params![id, at, next],
        )?;
        Ok(())
    }

    /// Cancels a reminder.
    pub fn cancel_reminder(&self, id: i64) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE reminders SET next_fire = NULL WHERE id = ?1 AND next_fire IS NOT NULL",
            [id],
        )? > 0)
    }

    /// A `meta` value.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Sets a `meta` value.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    pub(crate) fn has_table(&self, name: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE name = ?1",
                [name],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }
}

/// An FTS5 query from free text: the words that are not stop words, OR-ed, each quoted so that
/// no user text is read as FTS syntax. None when nothing is left to search for.
pub fn fts_query(text: &str) -> Option<String> {
    let mut words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() > 1)
        .map(|w| w.to_lowercase())
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .collect();
    let mut seen = std::collections::HashSet::new();
    words.retain(|w| seen.insert(w.clone()));
    words.truncate(16);
    (!words.is_empty()).then(|| {
        words
            .iter()
            .map(|w| format!("\"{w}\""))
            .collect::<Vec<_>>()
            .join(" OR ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts_query_is_safe_and_skips_stop_words() {
        assert_eq!(
            fts_query("What is my locker code?").unwrap(),
            "\"locker\" OR \"code\""
        );
        assert_eq!(
            fts_query("NEAR(\"xy\" OR yz)* xy").unwrap(),
            "\"near\" OR \"xy\" OR \"yz\""
        );
        assert_eq!(fts_query("what is it?"), None);
    }

    #[test]
    fn memories_messages_and_reminders_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.sqlite");
        {
            let s = Store::open(&db).unwrap();
            let c = s.new_conversation("test").unwrap();
            s.add_message(c, "user", "my bike is blue", None).unwrap();
            s.add_message(c, "assistant", "noted", Some("gemma"))
                .unwrap();
            s.save_memory("The locker code is 4711", "tool").unwrap();
            s.save_memory("Dentist appointments are on Tuesdays", "tool")
                .unwrap();
            s.add_reminder("every 10m", "stretch", 100).unwrap();
        }
        let s = Store::open(&db).unwrap();
        let r = s
            .recall_fts("what's the code of my lockers?", 3, None)
            .unwrap();
        assert_eq!(r[0].text, "The locker code is 4711");
        let r = s.recall_fts("bike colour", 3, None).unwrap();
        assert_eq!(r[0].kind, "message");
        assert!(r[0].text.contains("blue"));
        // Past messages of the current conversation are already in the context.
        assert!(s.recall_fts("bike", 3, Some(1)).unwrap().is_empty());
        let due = s.due_reminders(100).unwrap();
        assert_eq!(due.len(), 1);
        s.reminder_fired(due[0].id, 100, None).unwrap();
        assert!(s.due_reminders(1000).unwrap().is_empty());
        let id = s.memories(10).unwrap()[0].id;
        assert!(s.forget(id).unwrap());
        assert!(s.recall_fts("dentist", 3, None).unwrap().is_empty());
        assert_eq!(s.recent_messages(1, 10).unwrap().len(), 2);
    }
}
