//! Topology declare and check against the real broker.

use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};

use crate::harness::TestEnv;
use voucher_relay::broker::topology::{self, Mode};

#[tokio::test]
async fn check_reports_missing_then_declare_then_check_passes() {
    let env = TestEnv::new().await;
    let err = topology::apply(&env.conn, &env.config, Mode::Check)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("queue {} is missing", env.name("commands.csq"))),
        "{err}"
    );
    topology::apply(&env.conn, &env.config, Mode::Declare)
        .await
        .expect("declare");
    topology::apply(&env.conn, &env.config, Mode::Check)
        .await
        .expect("check after declare");
    // Declaring twice is harmless.
    topology::apply(&env.conn, &env.config, Mode::Declare)
        .await
        .expect("declare again");
    env.cleanup().await;
}

#[tokio::test]
async fn queue_with_other_arguments_gets_a_clear_message() {
    let env = TestEnv::new().await;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert("x-delivery-limit".into(), AMQPValue::LongInt(99));
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(env.name("voucher.dlx").as_str().into()),
    );
    let ch = env.conn.create_channel().await.unwrap();
    ch.queue_declare(
        env.name("commands.csq").as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    for mode in [Mode::Check, Mode::Declare] {
        let err = topology::apply(&env.conn, &env.config, mode)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(&env.name("commands.csq")), "{err}");
        assert!(err.contains("other arguments"), "{err}");
        assert!(err.contains("x-delivery-limit"), "{err}");
    }
    // The connection survived: the caller can keep using it.
    assert!(env.conn.status().connected());
    env.cleanup().await;
}
