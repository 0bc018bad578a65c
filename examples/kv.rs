//! The README's engine example, runnable: `cargo run --example kv`.

use strata::io::{open_storage_in, Backend};
use strata::lsm::{Db, Options, ReadOptions, WriteBatch, WriteOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(
        open_storage_in(Backend::Auto, dir.path()),
        dir.path().join("db"),
        Options::default(),
    )?;
    db.put(b"k", b"v", WriteOptions::sync(true))?; // durable when this returns
    let snap = db.snapshot();
    let mut b = WriteBatch::new();
    b.put(b"k", b"v2").delete(b"old");
    db.write(&b, WriteOptions::default())?; // atomic
    assert_eq!(db.get(b"k", Some(&snap))?, Some(b"v".to_vec()));
    let mut it = db.iter(ReadOptions {
        prefix: Some(b"k".to_vec()),
        ..ReadOptions::default()
    });
    it.seek_to_first();
    while it.valid() {
        println!(
            "{:?} = {:?}",
            String::from_utf8_lossy(it.key()),
            String::from_utf8_lossy(it.value())
        );
        it.next();
    }
    it.status()?;
    println!("{}", db.stats());
    db.close()?;
    Ok(())
}
