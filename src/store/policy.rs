//! Policy inputs in the store: objections, restrictions, denial snapshots,
//! person flags and their imports. Rows are keyed by index pseudonym only.

use std::collections::HashMap;

use sqlx::Row;

use super::QueryBuilder;

use super::{Result, Store, Tx, list_chunks, now, push_list, statement_chunks};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectionRow {
    pub person: String,
    /// A controller id, or `findata`.
    pub made_to: String,
    /// JSON: an array of purposes, or `"all"`.
    pub purposes: String,
    pub received_at: Option<String>,
    pub effective_from: String,
    pub withdrawn_at: Option<String>,
    pub source: Option<String>,
    pub reference: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestrictionRow {
    pub person: String,
    pub controller: Option<String>,
    pub start_at: String,
    pub end_at: Option<String>,
    pub source: Option<String>,
    pub reference: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagRow {
    pub person: String,
    pub flag: String,
    pub since: String,
    pub until: Option<String>,
    pub source: Option<String>,
    pub reference: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenialRow {
    pub service_event: Option<String>,
    pub provider: Option<String>,
    pub all_registers: bool,
    pub from_at: Option<String>,
    pub to_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenialSnapshot {
    pub person: String,
    pub origin: String,
    pub doc_key: Option<i64>,
    pub effective_at: String,
    pub none_valid: bool,
    pub emergency: Option<bool>,
    pub denials: Vec<DenialRow>,
}

/// Everything stored about one person's policy, as rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRows {
    pub objections: Vec<ObjectionRow>,
    pub restrictions: Vec<RestrictionRow>,
    pub flags: Vec<FlagRow>,
    /// The latest snapshot only.
    pub denials: Option<DenialSnapshot>,
}

fn in_list<'a>(q: &mut QueryBuilder<'a>, persons: &'a [String]) {
    q.push(" person IN (");
    push_list(q, persons);
}

impl Tx {
    pub async fn insert_import(&mut self, sha256: &str, rows: i64, counts: &str) -> Result<i64> {
        let r = {
            let mut q = self.builder("INSERT INTO imports (at, sha256, rows, counts) VALUES ($1, $2, $3, $4) RETURNING id");
            q.bind(now());
            q.bind(sha256);
            q.bind(rows);
            q.bind(counts);
            self.fetch_one(q).await
        }?;
        Ok(r.get(0))
    }

    pub async fn insert_objections(&mut self, import_id: i64, rows: &[ObjectionRow]) -> Result<()> {
        for chunk in statement_chunks(rows) {
            let mut q = self.builder(
                "INSERT INTO objections (person, made_to, purposes, received_at, effective_from, withdrawn_at, source, reference, import_id) ",
            );
            q.push_values(chunk, |mut b, o| {
                b.push_bind(&o.person)
                    .push_bind(&o.made_to)
                    .push_bind(&o.purposes)
                    .push_bind(&o.received_at)
                    .push_bind(&o.effective_from)
                    .push_bind(&o.withdrawn_at)
                    .push_bind(&o.source)
                    .push_bind(&o.reference)
                    .push_bind(import_id);
            });
            self.execute(q).await?;
        }
        Ok(())
    }

    pub async fn insert_restrictions(
        &mut self,
        import_id: i64,
        rows: &[RestrictionRow],
    ) -> Result<()> {
        for chunk in statement_chunks(rows) {
            let mut q = self.builder(
                "INSERT INTO restrictions (person, controller, start_at, end_at, source, reference, import_id) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(&r.person)
                    .push_bind(&r.controller)
                    .push_bind(&r.start_at)
                    .push_bind(&r.end_at)
                    .push_bind(&r.source)
                    .push_bind(&r.reference)
                    .push_bind(import_id);
            });
            self.execute(q).await?;
        }
        Ok(())
    }

    pub async fn upsert_flags(&mut self, import_id: i64, rows: &[FlagRow]) -> Result<()> {
        for chunk in statement_chunks(rows) {
            let mut q = self.builder(
                "INSERT INTO person_flags (person, flag, since, until, source, reference, import_id) ",
            );
            q.push_values(chunk, |mut b, f| {
                b.push_bind(&f.person)
                    .push_bind(&f.flag)
                    .push_bind(&f.since)
                    .push_bind(&f.until)
                    .push_bind(&f.source)
                    .push_bind(&f.reference)
                    .push_bind(import_id);
            });
            q.push(" ON CONFLICT (person, flag) DO UPDATE SET since = excluded.since, until = excluded.until, source = excluded.source, reference = excluded.reference, import_id = excluded.import_id");
            self.execute(q).await?;
        }
        Ok(())
    }

    pub async fn insert_denial_snapshots(&mut self, snaps: &[DenialSnapshot]) -> Result<()> {
        for s in snaps {
            let r = {
                let mut q = self.builder("INSERT INTO denial_snapshots (person, origin, doc_key, effective_at, none_valid, emergency) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id");
                q.bind(&s.person);
                q.bind(&s.origin);
                q.bind(s.doc_key);
                q.bind(&s.effective_at);
                q.bind(i64::from(s.none_valid));
                q.bind(s.emergency.map(i64::from));
                self.fetch_one(q).await
            }?;
            let id: i64 = r.get(0);
            for chunk in statement_chunks(&s.denials) {
                let mut q = self.builder("INSERT INTO denials (snapshot_id, service_event, provider, all_registers, from_at, to_at) ",
                );
                q.push_values(chunk, |mut b, d| {
                    b.push_bind(id)
                        .push_bind(&d.service_event)
                        .push_bind(&d.provider)
                        .push_bind(i64::from(d.all_registers))
                        .push_bind(&d.from_at)
                        .push_bind(&d.to_at);
                });
                self.execute(q).await?;
            }
        }
        Ok(())
    }

    /// Takes rows out of a staged batch at sealing: they stay in the batch's
    /// rows marked `removed` (so the line numbers that page a batch stay
    /// whole, and a later re-check or re-seal skips them), and the register
    /// never got them, so they are not live.
    pub async fn remove_at_sealing(
        &mut self,
        feed: &str,
        seq: i64,
        record_ids: &[String],
    ) -> Result<()> {
        for chunk in list_chunks(record_ids) {
            let mut q = self.builder("UPDATE batch_rows SET op = 'removed' WHERE feed = ");
            q.push_bind(feed);
            q.push(" AND seq = ");
            q.push_bind(seq);
            q.push(" AND record_id IN (");
            push_list(&mut q, chunk);
            self.execute(q).await?;
            let mut q = self.builder("DELETE FROM feed_rows WHERE feed = ");
            q.push_bind(feed);
            q.push(" AND record_id IN (");
            push_list(&mut q, chunk);
            self.execute(q).await?;
        }
        Ok(())
    }

    /// Everyone with a record held in the feed for one of `reasons` (the
    /// policy rules that hold), through the held rows' `(feed, reason,
    /// person)` index: a run re-evaluates them whether or not they have a
    /// new document (DESIGN §1 step 4). A mapping's holds (a value without a
    /// unit) change only with a new document, which re-evaluates its person
    /// anyway, so they are not read here.
    pub async fn held_persons(&mut self, feed: &str, reasons: &[&str]) -> Result<Vec<String>> {
        if reasons.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = self.builder("SELECT DISTINCT person FROM held WHERE feed = ");
        q.push_bind(feed);
        q.push(" AND reason IN (");
        push_list(&mut q, reasons);
        q.push(" ORDER BY person");
        let rows = self.fetch_all(q).await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// (feed, seq, person, controller OID, service event) of the rows that
    /// sealed, sending, delivered or dead batches sent of these people: what
    /// an objection that arrives now could have bound. Rows removed at
    /// sealing and retractions are not among them.
    pub async fn sealed_rows_of(
        &mut self,
        persons: &[String],
    ) -> Result<Vec<(String, i64, String, Option<String>, Option<String>)>> {
        let mut out = Vec::new();
        for chunk in list_chunks(persons) {
            let mut q = self.builder(
                "SELECT DISTINCT r.feed, r.seq, r.person, d.controller, d.service_event FROM batch_rows r JOIN batches b ON b.feed = r.feed AND b.seq = r.seq JOIN documents d ON d.doc_key = r.doc_key WHERE b.state IN ('sealed', 'sending', 'delivered', 'dead') AND r.op = 'upsert' AND r.person IN (",
            );
            push_list(&mut q, chunk);
            q.push(" ORDER BY r.feed, r.seq");
            for r in self.fetch_all(q).await? {
                out.push((r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)));
            }
        }
        Ok(out)
    }

    /// The stored policy of these people.
    pub async fn policy_rows(&mut self, persons: &[String]) -> Result<HashMap<String, PolicyRows>> {
        load_policy(self, persons).await
    }
}

impl Store {
    pub async fn policy_rows(&self, persons: &[String]) -> Result<HashMap<String, PolicyRows>> {
        let mut tx = self.begin_read().await?;
        let rows = load_policy(&mut tx, persons).await?;
        tx.rollback().await?;
        Ok(rows)
    }

    /// `held list`: per feed and reason, how many records are held and
    /// since when the oldest hold has lasted (its `since`, kept while the
    /// record stays held for that reason).
    pub async fn held_summary(&self) -> Result<Vec<(String, String, i64, String)>> {
        let rows = sqlx::query(
            "SELECT feed, reason, COUNT(*), MIN(since) FROM held GROUP BY feed, reason ORDER BY feed, reason",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }

    /// Counts for `objections list`: (kind, made to / flag, active, total).
    pub async fn policy_counts(&self) -> Result<Vec<(String, String, i64)>> {
        let mut out = Vec::new();
        for (sql, kind) in [
            (
                "SELECT made_to, COUNT(*) FROM objections WHERE withdrawn_at IS NULL GROUP BY made_to ORDER BY made_to",
                "objection",
            ),
            (
                "SELECT made_to, COUNT(*) FROM objections WHERE withdrawn_at IS NOT NULL GROUP BY made_to ORDER BY made_to",
                "objection_withdrawn",
            ),
            (
                "SELECT COALESCE(controller, '*'), COUNT(*) FROM restrictions GROUP BY controller ORDER BY controller",
                "restriction",
            ),
            (
                "SELECT flag, COUNT(*) FROM person_flags GROUP BY flag ORDER BY flag",
                "flag",
            ),
            (
                "SELECT origin, COUNT(DISTINCT person) FROM denial_snapshots GROUP BY origin ORDER BY origin",
                "denial_snapshot_people",
            ),
        ] {
            for r in sqlx::query(sql).fetch_all(&self.pool).await? {
                out.push((kind.to_owned(), r.get(0), r.get(1)));
            }
        }
        Ok(out)
    }
}

async fn load_policy(tx: &mut Tx, persons: &[String]) -> Result<HashMap<String, PolicyRows>> {
    let mut out: HashMap<String, PolicyRows> = HashMap::new();
    for chunk in list_chunks(persons) {
        let mut q = tx.builder("SELECT person, made_to, purposes, received_at, effective_from, withdrawn_at, source, reference FROM objections WHERE",
        );
        in_list(&mut q, chunk);
        for r in tx.fetch_all(q).await? {
            let o = ObjectionRow {
                person: r.get(0),
                made_to: r.get(1),
                purposes: r.get(2),
                received_at: r.get(3),
                effective_from: r.get(4),
                withdrawn_at: r.get(5),
                source: r.get(6),
                reference: r.get(7),
            };
            out.entry(o.person.clone()).or_default().objections.push(o);
        }
        let mut q = tx.builder("SELECT person, controller, start_at, end_at, source, reference FROM restrictions WHERE",
        );
        in_list(&mut q, chunk);
        for r in tx.fetch_all(q).await? {
            let x = RestrictionRow {
                person: r.get(0),
                controller: r.get(1),
                start_at: r.get(2),
                end_at: r.get(3),
                source: r.get(4),
                reference: r.get(5),
            };
            out.entry(x.person.clone())
                .or_default()
                .restrictions
                .push(x);
        }
        let mut q = tx.builder(
            "SELECT person, flag, since, until, source, reference FROM person_flags WHERE",
        );
        in_list(&mut q, chunk);
        for r in tx.fetch_all(q).await? {
            let f = FlagRow {
                person: r.get(0),
                flag: r.get(1),
                since: r.get(2),
                until: r.get(3),
                source: r.get(4),
                reference: r.get(5),
            };
            out.entry(f.person.clone()).or_default().flags.push(f);
        }
        // The latest snapshot per person: by effective time, then insertion.
        let mut q = tx.builder("SELECT id, person, origin, doc_key, effective_at, none_valid, emergency FROM denial_snapshots WHERE",
        );
        in_list(&mut q, chunk);
        q.push(" ORDER BY person, effective_at, id");
        let mut latest: HashMap<String, (i64, DenialSnapshot)> = HashMap::new();
        for r in tx.fetch_all(q).await? {
            let snap = DenialSnapshot {
                person: r.get(1),
                origin: r.get(2),
                doc_key: r.get(3),
                effective_at: r.get(4),
                none_valid: r.get::<i64>(5) != 0,
                emergency: r.get::<Option<i64>>(6).map(|e| e != 0),
                denials: Vec::new(),
            };
            latest.insert(snap.person.clone(), (r.get(0), snap));
        }
        if !latest.is_empty() {
            let ids: Vec<i64> = latest.values().map(|(id, _)| *id).collect();
            let mut q = tx.builder("SELECT snapshot_id, service_event, provider, all_registers, from_at, to_at FROM denials WHERE snapshot_id IN (",
            );
            let mut sep = q.separated(", ");
            for id in &ids {
                sep.push_bind(*id);
            }
            q.push(")");
            let mut by_id: HashMap<i64, Vec<DenialRow>> = HashMap::new();
            for r in tx.fetch_all(q).await? {
                by_id.entry(r.get(0)).or_default().push(DenialRow {
                    service_event: r.get(1),
                    provider: r.get(2),
                    all_registers: r.get::<i64>(3) != 0,
                    from_at: r.get(4),
                    to_at: r.get(5),
                });
            }
            for (person, (id, mut snap)) in latest {
                snap.denials = by_id.remove(&id).unwrap_or_default();
                out.entry(person).or_default().denials = Some(snap);
            }
        }
    }
    Ok(out)
}
