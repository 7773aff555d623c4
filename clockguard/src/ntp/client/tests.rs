use super::*;

#[tokio::test]
async fn datagrams_carry_the_kernel_receive_time() {
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    enable_rx_timestamps(&server);
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = [0u8; 64];
    // The kernel turns receive timestamping on through deferred work the first time a
    // socket asks; until then recvmsg stamps with the time of the read. Warm up first.
    let to = server.local_addr().unwrap();
    client.send_to(b"warm-up", to).await.unwrap();
    recv_stamped(&server, &mut buf).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = clock::realtime_ns();
    client
        .send_to(b"0123456789", server.local_addr().unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (n, from, stamp) = recv_stamped(&server, &mut buf).await.unwrap();
    let after = clock::realtime_ns();
    assert_eq!((n, &buf[..n]), (10, &b"0123456789"[..]));
    assert_eq!(from, client.local_addr().unwrap());
    let stamp = stamp.expect("SO_TIMESTAMPNS gives a stamp on loopback");
    // Stamped on arrival, not when read 20 ms later.
    assert!(
        before <= stamp && stamp <= after,
        "{before} {stamp} {after}"
    );
    assert!(
        after - stamp >= 15_000_000,
        "read {} ns after arrival",
        after - stamp
    );
    // The raw time of arrival lies as far back.
    let raw = raw_at_stamp(Some(stamp));
    assert!(clock::reading().raw.ns_since(raw) >= 15_000_000);
}

#[test]
fn drift_file_is_read_and_bad_ones_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ntp.drift");
    assert_eq!(read_drift(&path), None);
    std::fs::write(&path, "-12.5 0.25\n").unwrap();
    assert_eq!(read_drift(&path), Some((-12.5, 0.25)));
    std::fs::write(&path, "garbage\n").unwrap();
    assert_eq!(read_drift(&path), None);
    std::fs::write(&path, "900 1\n").unwrap();
    assert_eq!(read_drift(&path), None);
}
