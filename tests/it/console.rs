//! The console in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`), driven over
//! WebDriver. It signs in with the admin token, reads the figures and checks them against `/metrics`, and
//! replays a dead letter with the page's own button. With `HOOKGATE_CONSOLE_SCREENSHOT=PATH` it also saves
//! a screenshot of the page (the README's).

use std::process::Stdio;
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use hookgate::config::{self, Config};
use http::{HeaderMap, HeaderValue};

use crate::common::process::free_port;
use crate::common::redis::RedisServer;
use crate::common::{FakeDownstream, Sender, TestGateway, event_body, metric, sign, until};

const TOKEN: &str = "console-admin-token-0001";

fn console_config(redis: &str, downstream: &str) -> Config {
    let text = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        admin_listen = "127.0.0.1:0"
        [admin]
        allow_actions = true
        token = "{TOKEN}"
        [dedup]
        store = "redis"
        redis_url = "{redis}"
        [[source]]
        name = "browserq"
        path = "/gh"
        scheme = "github"
        secrets = ["browser-secret-000001"]
        [source.forward]
        kind = "queue"
        url = "{downstream}/in"
        timeout = "2s"
        max_attempts = 1
        allow_volatile = true
        "#
    );
    config::parse(&text, std::path::Path::new("console.toml")).expect("valid")
}

/// `chromedriver` on a free port, stopped when dropped.
struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Driver {
    async fn start() -> Driver {
        let port = free_port();
        let child = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver (Debian package chromium-driver) runs");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "chromedriver did not listen within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Driver { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn admin_get(sender: &Sender, url: &str) -> String {
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {TOKEN}")).expect("value"),
    );
    let reply = sender.send("GET", url, headers, "").await;
    assert_eq!(reply.status.as_u16(), 200, "{url}");
    String::from_utf8_lossy(&reply.body).into_owned()
}

#[tokio::test]
async fn in_a_browser_the_console_shows_the_metrics_figures_and_replays_a_dead_letter() {
    let redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    // The first delivery fails, and with max_attempts = 1 the event is a dead letter; the replay succeeds.
    downstream.answer(&[500, 200]);
    let config = console_config(&redis.url(), &downstream.url(""));
    let gateway = TestGateway::start(config.clone()).await;
    let sender = Sender::default();
    let body = event_body("dead-1");
    sender
        .post(
            &gateway.url("/gh"),
            sign(&config, "browserq", &body, "dead-1"),
            body.clone(),
        )
        .await
        .assert(202, "queued");
    let mut wrong = sign(&config, "browserq", &body, "dead-2");
    wrong.insert("x-hub-signature-256", HeaderValue::from_static("sha256=00"));
    sender
        .post(&gateway.url("/gh"), wrong, body.clone())
        .await
        .assert(401, "bad_signature");
    assert!(
        until(Duration::from_secs(10), || downstream.received().len() == 1).await,
        "the first delivery was tried"
    );
    let mut dead = false;
    for _ in 0..200 {
        if admin_get(&sender, &gateway.admin_url("/admin/queues"))
            .await
            .contains(r#""dead":1"#)
        {
            dead = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(dead, "the event became a dead letter");

    // Without the token, the admin port answers nothing but the sign-in page.
    let reply = sender
        .send("GET", &gateway.admin_url("/metrics"), HeaderMap::new(), "")
        .await;
    assert_eq!(reply.status.as_u16(), 401);

    let driver = Driver::start().await;
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,900"],
        }),
    );
    let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a headless Chromium session");

    // Each navigation completes before its page is read: a read waits for an element only the new page
    // has, up to 10 s.
    let wait_for = |css: &'static str| {
        browser
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
    };
    let outcome = async {
        browser.goto(&gateway.admin_url("/")).await?;
        browser
            .find(Locator::Css("input[name=token]"))
            .await?
            .send_keys(TOKEN)
            .await?;
        browser
            .find(Locator::Css("form button[type=submit]"))
            .await?
            .click()
            .await?;
        wait_for("#source-browserq").await?;

        // The figures, as the page shows them, against /metrics.
        let metrics = admin_get(&sender, &gateway.admin_url("/metrics")).await;
        for outcome in ["queued", "bad_signature"] {
            let shown = browser
                .find(Locator::Css(&format!(
                    "#source-browserq td[data-requests=\"{outcome}\"]"
                )))
                .await?
                .text()
                .await?;
            let counted = metric(
                &metrics,
                &format!(r#"hookgate_requests_total{{source="browserq",outcome="{outcome}"}}"#),
            );
            assert_eq!(shown, format!("{counted}"), "{outcome}");
        }
        let event = browser
            .find(Locator::Css("table.dead td.event-id"))
            .await?
            .text()
            .await?;
        assert_eq!(event, "dead-1");
        if let Ok(path) = std::env::var("HOOKGATE_CONSOLE_SCREENSHOT") {
            std::fs::write(&path, browser.screenshot().await?).expect("write the screenshot");
        }

        // The page's own button replays the dead letter: the worker delivers it again, and it succeeds.
        browser
            .find(Locator::Css("table.dead button.replay"))
            .await?
            .click()
            .await?;
        // The page after the replay's POST and redirect lists no dead letter; closing the session before
        // it has loaded would abandon the POST.
        wait_for("p.dead").await?;
        let page = browser.source().await?;
        Ok::<String, fantoccini::error::CmdError>(page)
    }
    .await;
    let closed = browser.close().await;
    let page = outcome.expect("the console in the browser");
    closed.expect("close the session");
    assert!(
        until(Duration::from_secs(10), || downstream.received().len() == 2).await,
        "the replayed dead letter was delivered"
    );
    assert_eq!(downstream.received()[1].body.as_ref(), body.as_slice());
    assert!(
        page.contains("No dead letters."),
        "after the replay the page lists none: {page}"
    );
    drop(driver);
}

/// Actions need `admin.allow_actions` and the page's CSRF token; with `admin.token`, every admin path but
/// the probes needs the token.
#[tokio::test]
async fn actions_need_to_be_allowed_and_carry_the_pages_csrf_token() {
    let redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    let allowed = console_config(&redis.url(), &downstream.url(""));
    let gateway = TestGateway::start(allowed.clone()).await;
    let sender = Sender::default();
    let bearer = || {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {TOKEN}")).expect("value"),
        );
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers
    };
    for (path, status) in [
        ("/healthz", 200),
        ("/readyz", 200),
        ("/metrics", 401),
        ("/admin/queues", 401),
    ] {
        let reply = sender.send("GET", &gateway.admin_url(path), HeaderMap::new(), "").await;
        assert_eq!(reply.status.as_u16(), status, "{path} without the token");
    }
    let mut wrong = HeaderMap::new();
    wrong.insert("authorization", HeaderValue::from_static("Bearer not-the-token"));
    let reply = sender.send("GET", &gateway.admin_url("/metrics"), wrong, "").await;
    assert_eq!(reply.status.as_u16(), 401, "a wrong token");

    let action = gateway.admin_url("/actions/dead/replay");
    let reply = sender
        .send("POST", &action, bearer(), "source=browserq&id=1-0&csrf=guess")
        .await;
    assert_eq!(reply.status.as_u16(), 403, "{:?}", reply.body);
    assert!(String::from_utf8_lossy(&reply.body).contains("CSRF"));
    gateway.stop().await;

    // With actions off, even a well-formed action is refused.
    let mut off = console_config(&redis.url(), &downstream.url(""));
    off.admin.allow_actions = false;
    let gateway = TestGateway::start(off).await;
    let reply = sender
        .send(
            "POST",
            &gateway.admin_url("/actions/dead/replay"),
            bearer(),
            "source=browserq&id=1-0&csrf=x",
        )
        .await;
    assert_eq!(reply.status.as_u16(), 403);
    assert!(String::from_utf8_lossy(&reply.body).contains("allow_actions"));
}
