//! A small WebDriver client (the W3C protocol, JSON over HTTP) driving Debian's headless
//! Chromium through chromedriver, both on loopback. Enough to log in, follow links, fill
//! forms, read pages and take a screenshot.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Whether browser tests must run (`.ci/run` asks); otherwise they run only where Chromium
/// is installed, and say so when they skip.
pub fn browser_available() -> bool {
    let required = std::env::var("VOUCHER_RELAY_BROWSER_TESTS").is_ok_and(|v| v == "1");
    let present =
        std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
    assert!(
        present || !required,
        "VOUCHER_RELAY_BROWSER_TESTS=1 but {CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)"
    );
    if !present {
        use std::io::Write;
        let _ = std::io::stderr().write_all(
            b"note: the browser test is skipped: install chromium and chromium-driver (.ci/run does)\n",
        );
    }
    present
}

pub struct Browser {
    http: reqwest::Client,
    base: String,
    driver: Child,
    profile: std::path::PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless session.
    pub async fn start() -> Browser {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let root = format!("http://127.0.0.1:{port}");
        let mut ready = false;
        for _ in 0..100 {
            if let Ok(r) = http.get(format!("{root}/status")).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == json!(true)
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "chromedriver did not become ready");
        let profile = std::env::temp_dir().join(format!("vr-chromium-{port}"));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900",
                         "--no-first-run", "--disable-extensions",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let r: Value = http
            .post(format!("{root}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session answer");
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_string();
        Browser {
            http,
            base: format!("{root}/session/{session}"),
            driver,
            profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r: Value = req
            .send()
            .await
            .expect("webdriver call")
            .json()
            .await
            .expect("webdriver answer");
        if let Some(err) = r["value"]["error"].as_str() {
            panic!(
                "webdriver {path}: {err}: {}",
                r["value"]["message"].as_str().unwrap_or("")
            );
        }
        r["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The page's source once it contains `needle`: a click that submits a form may return
    /// before the next page has loaded. Panics after 15 s with what the page shows.
    pub async fn wait_for(&self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let source = self.source().await;
            if source.contains(needle) {
                return source;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the page never showed {needle:?}: {source}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn find_by(&self, using: &str, value: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": using, "value": value})),
            )
            .await;
        v[ELEMENT].as_str().expect("element id").to_string()
    }

    /// The first element matching a CSS selector.
    pub async fn find(&self, css: &str) -> String {
        self.find_by("css selector", css).await
    }

    pub async fn find_xpath(&self, xpath: &str) -> String {
        self.find_by("xpath", xpath).await
    }

    pub async fn click(&self, element: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    pub async fn type_into(&self, element: &str, text: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    pub async fn text(&self, element: &str) -> String {
        self.call(
            reqwest::Method::GET,
            &format!("/element/{element}/text"),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// The value of cookie `name` for the current page.
    pub async fn cookie(&self, name: &str) -> Option<String> {
        let v = self.call(reqwest::Method::GET, "/cookie", None).await;
        v.as_array()?
            .iter()
            .find(|c| c["name"] == name)
            .and_then(|c| c["value"].as_str().map(str::to_owned))
    }

    /// The page as PNG bytes.
    pub async fn screenshot(&self) -> Vec<u8> {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("base64 PNG")
    }

    pub async fn close(mut self) {
        let _ = self.http.delete(&self.base).send().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A failed test still stops chromedriver (and its Chromium with it).
        let _ = self.driver.kill();
    }
}
