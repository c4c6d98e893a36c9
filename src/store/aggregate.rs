//! An aggregate feed's state: its input rows by period, and the cells
//! published of each period (their ids and row hashes). Written and read in
//! the run's staging transaction ([`super::Tx`]).

use std::collections::{BTreeSet, HashMap};

use super::sql::{list_chunks, statement_chunks};
use super::{Result, Tx, push_list};

/// An input row as stored: a row the feed's mapping made, in its period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateInput {
    pub record_id: String,
    pub period: String,
    pub person: String,
    pub row_json: String,
}

/// A published cell: its keyed id, period and the hash of its row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedCell {
    pub cell_id: String,
    pub period: String,
    pub row_hash: String,
}

impl Tx {
    /// People with statistics inputs in this feed and any policy input
    /// (objection, restriction, flag, denial of disclosure): an aggregate
    /// feed judges them again every run, since a policy input that applies
    /// now takes their rows out of the statistics.
    pub async fn aggregate_policy_persons(&mut self, feed: &str) -> Result<Vec<String>> {
        let mut q = self.builder("SELECT DISTINCT person FROM aggregate_inputs WHERE feed = ");
        q.push_bind(feed);
        q.push(
            " AND person IN (SELECT person FROM objections UNION SELECT person FROM restrictions UNION SELECT person FROM person_flags UNION SELECT person FROM denial_snapshots) ORDER BY person",
        );
        let rows = self.fetch_all(q).await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// Replaces input rows (`upserts`) and removes others (`removed`, by
    /// record id). Returns every period whose inputs changed: those of the
    /// new rows and those the replaced or removed rows were in.
    pub async fn aggregate_apply(
        &mut self,
        feed: &str,
        upserts: &[AggregateInput],
        removed: &[String],
    ) -> Result<BTreeSet<String>> {
        let mut touched: BTreeSet<String> = upserts.iter().map(|r| r.period.clone()).collect();
        let mut ids: Vec<&str> = upserts.iter().map(|r| r.record_id.as_str()).collect();
        ids.extend(removed.iter().map(String::as_str));
        for chunk in list_chunks(&ids) {
            let mut q = self.builder("SELECT DISTINCT period FROM aggregate_inputs WHERE feed = ");
            q.push_bind(feed);
            q.push(" AND record_id IN (");
            push_list(&mut q, chunk);
            for r in self.fetch_all(q).await? {
                touched.insert(r.get(0));
            }
        }
        for chunk in list_chunks(removed) {
            let mut q = self.builder("DELETE FROM aggregate_inputs WHERE feed = ");
            q.push_bind(feed);
            q.push(" AND record_id IN (");
            push_list(&mut q, chunk);
            self.execute(q).await?;
        }
        for chunk in statement_chunks(upserts) {
            let mut q = self.builder(
                "INSERT INTO aggregate_inputs (feed, record_id, period, person, row_json) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(feed)
                    .push_bind(&r.record_id)
                    .push_bind(&r.period)
                    .push_bind(&r.person)
                    .push_bind(&r.row_json);
            });
            q.push(
                " ON CONFLICT (feed, record_id) DO UPDATE SET period = excluded.period, person = excluded.person, row_json = excluded.row_json",
            );
            self.execute(q).await?;
        }
        Ok(touched)
    }

    /// Every input row of these periods, by period.
    pub async fn aggregate_inputs(
        &mut self,
        feed: &str,
        periods: &[String],
    ) -> Result<HashMap<String, Vec<AggregateInput>>> {
        let mut out: HashMap<String, Vec<AggregateInput>> = HashMap::new();
        for chunk in list_chunks(periods) {
            let mut q = self.builder(
                "SELECT record_id, period, person, row_json FROM aggregate_inputs WHERE feed = ",
            );
            q.push_bind(feed);
            q.push(" AND period IN (");
            push_list(&mut q, chunk);
            q.push(" ORDER BY period, record_id");
            for r in self.fetch_all(q).await? {
                let row = AggregateInput {
                    record_id: r.get(0),
                    period: r.get(1),
                    person: r.get(2),
                    row_json: r.get(3),
                };
                out.entry(row.period.clone()).or_default().push(row);
            }
        }
        Ok(out)
    }

    /// The cells published of these periods.
    pub async fn published_cells(
        &mut self,
        feed: &str,
        periods: &[String],
    ) -> Result<Vec<PublishedCell>> {
        let mut out = Vec::new();
        for chunk in list_chunks(periods) {
            let mut q =
                self.builder("SELECT cell_id, period, row_hash FROM aggregate_cells WHERE feed = ");
            q.push_bind(feed);
            q.push(" AND period IN (");
            push_list(&mut q, chunk);
            q.push(" ORDER BY cell_id");
            for r in self.fetch_all(q).await? {
                out.push(PublishedCell {
                    cell_id: r.get(0),
                    period: r.get(1),
                    row_hash: r.get(2),
                });
            }
        }
        Ok(out)
    }

    /// Records what a batch publishes: `upserts` now hold these rows,
    /// `retracts` are gone.
    pub async fn publish_cells(
        &mut self,
        feed: &str,
        upserts: &[PublishedCell],
        retracts: &[String],
    ) -> Result<()> {
        for chunk in list_chunks(retracts) {
            let mut q = self.builder("DELETE FROM aggregate_cells WHERE feed = ");
            q.push_bind(feed);
            q.push(" AND cell_id IN (");
            push_list(&mut q, chunk);
            self.execute(q).await?;
        }
        for chunk in statement_chunks(upserts) {
            let mut q =
                self.builder("INSERT INTO aggregate_cells (feed, cell_id, period, row_hash) ");
            q.push_values(chunk, |mut b, c| {
                b.push_bind(feed)
                    .push_bind(&c.cell_id)
                    .push_bind(&c.period)
                    .push_bind(&c.row_hash);
            });
            q.push(
                " ON CONFLICT (feed, cell_id) DO UPDATE SET period = excluded.period, row_hash = excluded.row_hash",
            );
            self.execute(q).await?;
        }
        Ok(())
    }
}
