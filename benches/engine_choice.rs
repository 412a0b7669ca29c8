//! Engine choice for the durable backend (decision 008): fjall 3.1 (LSM tree) against redb 4.6
//! (B-tree), raw engine calls with no rs2 on top, on the keyed counter (batched, write-behind,
//! strict: safe against `kill -9` per event) and on 1,000,000 distinct keys. Before the timed
//! groups it prints each engine's one-off write / read times and on-disk size for the distinct
//! keys. Timed: the workload only (not temp-dir creation, open or close).
//! Run: `cargo bench -p rs2-benches --bench engine_choice`.
use criterion::{measurement::WallTime, BenchmarkGroup, Criterion, SamplingMode, Throughput};
use fjall::{Database as FDb, Keyspace, KeyspaceCreateOptions, PersistMode};
use redb::{Database as RDb, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::{
    collections::{HashMap, HashSet},
    path::Path,
    time::{Duration, Instant},
};
const T: TableDefinition<&str, u64> = TableDefinition::new("state");
const EVENTS: usize = 1_000_000;
const KEYS: usize = 10_000;
const BATCH: usize = 10_000;
const S_EVENTS: usize = 20_000;
const S_KEYS: usize = 1_000;
const DISTINCT: usize = 1_000_000;
type K = [String];
fn keys(p: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{p}-{i}")).collect()
}
fn de(v: &[u8]) -> u64 {
    u64::from_le_bytes(v[..8].try_into().unwrap())
}
fn fopen(p: &Path) -> (FDb, Keyspace) {
    let db = FDb::builder(p).open().unwrap();
    let ks = db
        .keyspace("state", KeyspaceCreateOptions::default)
        .unwrap();
    (db, ks)
}
fn ropen(p: &Path) -> RDb {
    RDb::create(p.join("state.redb")).unwrap()
}
fn fsum(ks: &Keyspace) -> u64 {
    ks.iter().map(|g| de(&g.into_inner().unwrap().1)).sum()
}
fn rsum(db: &RDb) -> u64 {
    let rt = db.begin_read().unwrap();
    let t = rt.open_table(T).unwrap();
    t.iter().unwrap().map(|r| r.unwrap().1.value()).sum()
}
fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}
fn f_batched(p: &Path, k: &K) -> Duration {
    /* 1. RMW, SyncAll every 10k events */
    let (db, ks) = fopen(p);
    let t0 = Instant::now();
    for i in 0..EVENTS {
        let key = k[i % KEYS].as_str();
        let c = ks.get(key).unwrap().map_or(0, |v| de(&v)) + 1;
        ks.insert(key, c.to_le_bytes()).unwrap();
        if (i + 1) % BATCH == 0 {
            db.persist(PersistMode::SyncAll).unwrap();
        }
    }
    let el = t0.elapsed();
    assert_eq!(fsum(&ks), EVENTS as u64);
    el
}
fn r_batched(p: &Path, k: &K) -> Duration {
    let db = ropen(p);
    let t0 = Instant::now();
    for b in 0..EVENTS / BATCH {
        let tx = db.begin_write().unwrap(); /* default durability = Immediate */
        {
            let mut t = tx.open_table(T).unwrap();
            for i in b * BATCH..(b + 1) * BATCH {
                let key = k[i % KEYS].as_str();
                let c = t.get(key).unwrap().map_or(0, |v| v.value()) + 1;
                t.insert(key, c).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let el = t0.elapsed();
    assert_eq!(rsum(&db), EVENTS as u64);
    el
}
fn f_coalesced(p: &Path, k: &K) -> Duration {
    /* 2. write-behind: HashMap cache, flush dirty keys every 10k */
    let (db, ks) = fopen(p);
    let t0 = Instant::now();
    let (mut cache, mut dirty) = (HashMap::<String, u64>::new(), HashSet::<usize>::new());
    for i in 0..EVENTS {
        let ki = i % KEYS;
        let key = &k[ki];
        let c = match cache.get_mut(key) {
            Some(c) => c, // miss => load from store
            None => {
                let v = ks.get(key.as_str()).unwrap().map_or(0, |v| de(&v));
                cache.entry(key.clone()).or_insert(v)
            }
        };
        *c += 1;
        dirty.insert(ki);
        if (i + 1) % BATCH == 0 {
            let mut wb = db.batch();
            for d in dirty.drain() {
                wb.insert(&ks, k[d].as_str(), cache[&k[d]].to_le_bytes());
            }
            wb.commit().unwrap();
            db.persist(PersistMode::SyncAll).unwrap();
        }
    }
    let el = t0.elapsed();
    assert_eq!(fsum(&ks), EVENTS as u64);
    el
}
fn r_coalesced(p: &Path, k: &K) -> Duration {
    let db = ropen(p);
    {
        let tx = db.begin_write().unwrap();
        tx.open_table(T).unwrap();
        tx.commit().unwrap();
    }
    let t0 = Instant::now();
    let (mut cache, mut dirty) = (HashMap::<String, u64>::new(), HashSet::<usize>::new());
    let mut rt = db.begin_read().unwrap();
    for i in 0..EVENTS {
        let ki = i % KEYS;
        let key = &k[ki];
        let c = match cache.get_mut(key) {
            Some(c) => c,
            None => {
                let v = rt
                    .open_table(T)
                    .unwrap()
                    .get(key.as_str())
                    .unwrap()
                    .map_or(0, |v| v.value());
                cache.entry(key.clone()).or_insert(v)
            }
        };
        *c += 1;
        dirty.insert(ki);
        if (i + 1) % BATCH == 0 {
            drop(rt);
            let tx = db.begin_write().unwrap();
            {
                let mut t = tx.open_table(T).unwrap();
                for d in dirty.drain() {
                    t.insert(k[d].as_str(), cache[&k[d]]).unwrap();
                }
            }
            tx.commit().unwrap();
            rt = db.begin_read().unwrap();
        }
    }
    drop(rt);
    let el = t0.elapsed();
    assert_eq!(rsum(&db), EVENTS as u64);
    el
}
fn f_strict(p: &Path, k: &K) -> Duration {
    /* 3. each event acked only once kill -9 safe */
    let (db, ks) = fopen(p);
    let t0 = Instant::now();
    for i in 0..S_EVENTS {
        let key = k[i % S_KEYS].as_str();
        let c = ks.get(key).unwrap().map_or(0, |v| de(&v)) + 1;
        ks.insert(key, c.to_le_bytes()).unwrap();
        db.persist(PersistMode::Buffer).unwrap();
    } /* journal in OS page cache => survives process kill */
    let el = t0.elapsed();
    assert_eq!(fsum(&ks), S_EVENTS as u64);
    el
}
fn r_strict(p: &Path, k: &K) -> Duration {
    let db = ropen(p);
    let t0 = Instant::now();
    for i in 0..S_EVENTS {
        let key = k[i % S_KEYS].as_str();
        let mut tx = db.begin_write().unwrap();
        tx.set_durability(Durability::Immediate).unwrap(); // None = in-process memory only, lost on kill -9
        {
            let mut t = tx.open_table(T).unwrap();
            let c = t.get(key).unwrap().map_or(0, |v| v.value()) + 1;
            t.insert(key, c).unwrap();
        }
        tx.commit().unwrap();
    }
    let el = t0.elapsed();
    assert_eq!(rsum(&db), S_EVENTS as u64);
    el
}
fn f_distinct(p: &Path, k: &K) -> (Duration, Duration, u64) {
    /* 4. 1M keys, batches of 10k, then read all */
    let (db, ks) = fopen(p);
    let t0 = Instant::now();
    for (b, ch) in k.chunks(BATCH).enumerate() {
        let mut wb = db.batch();
        for (j, key) in ch.iter().enumerate() {
            wb.insert(&ks, key.as_str(), ((b * BATCH + j) as u64).to_le_bytes());
        }
        wb.commit().unwrap();
        db.persist(PersistMode::SyncAll).unwrap();
    }
    let (w, sz, t1) = (t0.elapsed(), dir_size(p), Instant::now());
    for (i, key) in k.iter().enumerate() {
        assert_eq!(de(&ks.get(key.as_str()).unwrap().unwrap()), i as u64);
    }
    (w, t1.elapsed(), sz)
}
fn r_distinct(p: &Path, k: &K) -> (Duration, Duration, u64) {
    let db = ropen(p);
    let t0 = Instant::now();
    for (b, ch) in k.chunks(BATCH).enumerate() {
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(T).unwrap();
            for (j, key) in ch.iter().enumerate() {
                t.insert(key.as_str(), (b * BATCH + j) as u64).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let (w, sz, t1) = (t0.elapsed(), dir_size(p), Instant::now());
    {
        let rt = db.begin_read().unwrap();
        let t = rt.open_table(T).unwrap();
        for (i, key) in k.iter().enumerate() {
            assert_eq!(t.get(key.as_str()).unwrap().unwrap().value(), i as u64);
        }
    }
    (w, t1.elapsed(), sz)
}
fn run(g: &mut BenchmarkGroup<WallTime>, name: &str, k: &K, f: impl Fn(&Path, &K) -> Duration) {
    g.bench_function(name, |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| {
                    let d = tempfile::tempdir().unwrap();
                    f(d.path(), k)
                })
                .sum()
        })
    });
}
fn group<'a>(c: &'a mut Criterion, name: &str, n: usize) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(n as u64));
    g
}
fn main() {
    let (ck, sk, dk) = (
        keys("key", KEYS),
        keys("key", S_KEYS),
        keys("user", DISTINCT),
    );
    for (name, f) in [
        ("fjall", f_distinct as fn(&Path, &K) -> _),
        ("redb", r_distinct),
    ] {
        // one-off, outside criterion
        let d = tempfile::tempdir().unwrap();
        let (w, r, sz) = f(d.path(), &dk);
        let closed = dir_size(d.path());
        println!("ONE-OFF distinct_keys/{name}: write {:.3}s ({:.0}/s) read {:.3}s ({:.0}/s) disk-after-writes {sz} B, after-close {closed} B",
            w.as_secs_f64(), DISTINCT as f64 / w.as_secs_f64(), r.as_secs_f64(), DISTINCT as f64 / r.as_secs_f64());
    }
    let mut c = Criterion::default().configure_from_args();
    {
        let mut g = group(&mut c, "keyed_counter_batched", EVENTS);
        run(&mut g, "fjall", &ck, f_batched);
        run(&mut g, "redb", &ck, r_batched);
        g.finish();
    }
    {
        let mut g = group(&mut c, "keyed_counter_coalesced", EVENTS);
        run(&mut g, "fjall", &ck, f_coalesced);
        run(&mut g, "redb", &ck, r_coalesced);
        g.finish();
    }
    {
        let mut g = group(&mut c, "keyed_counter_strict", S_EVENTS);
        run(&mut g, "fjall", &sk, f_strict);
        run(&mut g, "redb", &sk, r_strict);
        g.finish();
    }
    {
        let mut g = group(&mut c, "distinct_keys", DISTINCT);
        run(&mut g, "fjall", &dk, |p, k| {
            let (w, r, _) = f_distinct(p, k);
            w + r
        });
        run(&mut g, "redb", &dk, |p, k| {
            let (w, r, _) = r_distinct(p, k);
            w + r
        });
        g.finish();
    }
    c.final_summary();
}
