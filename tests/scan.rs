//! `doorhub scan` against simulated readers on a pty pair.

use doorhub::scan::Progress;
use doorhub::sim::{Mode, Reader, ReaderOptions};
use tokio::sync::mpsc;
use tokio_serial::SerialStream;

#[tokio::test]
async fn scan_lists_the_readers_that_answer() {
    let (master, slave) = SerialStream::pair().unwrap();
    let (_script, script_rx) = mpsc::channel(1);
    let (events, _events_rx) = mpsc::unbounded_channel();
    let sim = Reader::multidrop([
        ReaderOptions::new(1, Mode::Plain),
        ReaderOptions::new(4, Mode::Stored),
    ]);
    let task = tokio::spawn(sim.run(master, script_rx, events));
    let mut told = Vec::new();
    let found = doorhub::scan::scan(slave, 115_200, 0..=5, |p| {
        told.push(match p {
            Progress::Probing(a) => format!("probing {a}"),
            Progress::Found(f) => format!("found {}", f.address),
        })
    })
    .await
    .unwrap();
    task.abort();
    // Each reader is told as soon as it answered, before the next address is probed.
    assert_eq!(
        told,
        [
            "probing 0",
            "probing 1",
            "found 1",
            "probing 2",
            "probing 3",
            "probing 4",
            "found 4",
            "probing 5"
        ]
    );
    let addresses: Vec<u8> = found.iter().map(|f| f.address).collect();
    assert_eq!(addresses, vec![1, 4]);
    let line = found[0].to_string();
    assert!(line.contains("vendor 0A4448"), "{line}");
    assert!(line.contains("rx buffer 256"), "{line}");
    assert!(found.iter().all(|f| f.capabilities.is_some()));
}
