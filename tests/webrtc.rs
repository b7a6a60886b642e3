//! Two real WebRTC peers (the `webrtc` crate) negotiate through the real binary's
//! signaling: a doctor and an admitted patient exchange an offer, an answer and trickled
//! candidates over `/ws`, complete ICE and DTLS over loopback, and a message crosses the
//! data channel and is echoed back.

use bedside_loadtest::peer;
use bedside_loadtest::target::Target;
use bedside_tests::{CLINIC_A, TestServer};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_peers_connect_through_bedside_signaling() {
    let server = TestServer::start().await;
    let target = Target::bedside(&server.base, &format!("{}:{}", CLINIC_A.0, CLINIC_A.1)).unwrap();
    let timings = peer::one_visit(&target)
        .await
        .expect("peers connected and exchanged data");
    assert!(timings.connected <= timings.data);
    assert!(timings.data < Duration::from_secs(30), "{:?}", timings.data);
    // The visit's audit trail saw both join and the admission.
    let visits = server
        .api(CLINIC_A)
        .call(reqwest::Method::GET, "/v1/visits", None)
        .await
        .1;
    let id = visits["visits"][0]["id"].as_str().unwrap().to_owned();
    let kinds: Vec<String> = server
        .api(CLINIC_A)
        .events(&id)
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        kinds.starts_with(&[
            "created".into(),
            "joined".into(),
            "joined".into(),
            "admitted".into()
        ]),
        "{kinds:?}"
    );
}
