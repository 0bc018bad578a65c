//! Where io_uring cannot be set up, asking for it yields the std backend
//! and one warning through the log, however often it is asked. (Its own
//! test binary: the warning is once per process.)

use std::io::Write;
use std::sync::{Arc, Mutex};

use strata::io::{open_storage, Backend, OpenOptions, UringStorage};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn unavailable_io_uring_falls_back_to_std_and_says_so_once() {
    let log = Captured::default();
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        for _ in 0..3 {
            // What io_uring_setup returns on kernels without it.
            let s = UringStorage::or_fallback(Err(std::io::Error::from_raw_os_error(38)));
            assert_eq!(s.name(), "std");
            // The fallback is a working backend.
            let dir = tempfile::tempdir().expect("tmp");
            let f = s
                .open(&dir.path().join("f"), OpenOptions::create())
                .expect("open");
            f.write_at(b"works", 0).expect("write");
            assert_eq!(f.read_all().expect("read"), b"works");
        }
        // The environment switch takes the same path.
        std::env::set_var("STRATA_DISABLE_IO_URING", "1");
        assert_eq!(open_storage(Backend::Uring).name(), "std");
        std::env::remove_var("STRATA_DISABLE_IO_URING");
    });
    let text = String::from_utf8(log.0.lock().expect("lock").clone()).expect("utf8");
    let warnings = text.matches("io_uring unavailable").count();
    assert_eq!(warnings, 1, "one warning, got: {text}");
    assert!(text.contains("WARN"), "{text}");
}
