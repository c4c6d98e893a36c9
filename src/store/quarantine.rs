//! Reading quarantined documents back (`regfeed quarantine`) and releasing
//! one that decodes now. The pipeline writes the rows
//! ([`super::Tx::quarantine`]); a row is one refusal of one version of
//! a file (its digest), so the same digest can have several rows (one per
//! time it was read and refused).

use sqlx::Row;

use super::{Result, Store};

/// One stored refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineRow {
    pub source: String,
    /// The source's locator of the file (what [`crate::source::Source::locate`]
    /// takes). May contain a hetu when files are named after one: never
    /// printed or logged as it is.
    pub path: String,
    pub sha256: String,
    pub class: String,
    /// The decoder's description (never document content).
    pub detail: String,
    /// When it was refused (RFC 3339 UTC).
    pub at: String,
}

impl Store {
    /// Every quarantine row, oldest first.
    pub async fn quarantine_rows(&self) -> Result<Vec<QuarantineRow>> {
        let rows = sqlx::query(
            "SELECT source, path, sha256, class, detail, at FROM quarantine ORDER BY at, id",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| QuarantineRow {
                source: r.get(0),
                path: r.get(1),
                sha256: r.get(2),
                class: r.get(3),
                detail: r.get(4),
                at: r.get(5),
            })
            .collect())
    }

    /// Releases a quarantined document that decodes now: its rows under
    /// `sha256` go, and the source forgets it has seen `path`, so the next
    /// run reads it again and stages it as any new document. One
    /// transaction; returns the rows released.
    pub async fn release_quarantined(&self, source: &str, path: &str, sha256: &str) -> Result<u64> {
        let mut tx = self.begin().await?;
        let released = sqlx::query("DELETE FROM quarantine WHERE source = $1 AND sha256 = $2")
            .bind(source)
            .bind(sha256)
            .execute(tx.conn())
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM seen WHERE source = $1 AND path = $2")
            .bind(source)
            .bind(path)
            .execute(tx.conn())
            .await?;
        tx.commit().await?;
        Ok(released)
    }
}
