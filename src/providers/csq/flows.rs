//! The CSQ flows the executor runs: purchase (with dynamic-product selection and raffle
//! tickets), the product list, and the balance. Each returns a [`Step`] and the exchanges it
//! made, and decides nothing about queues or storage.

use serde_json::{Value, json};

use super::client::{CsqClient, Products};
use super::config::CsqConfig;
use super::mapping::{Decision, PurchaseRef, balance_step, purchase_decision, refusal};
use super::params::{BalanceParams, ProductsParams, PurchaseParams};
use super::poll::after_sale;
use crate::command::Status;
use crate::providers::step::error;
use crate::providers::{CallError, Exchange, Step};

/// Buys one voucher. A purchase naming neither `product_id` nor `dynamic_product_id` asks
/// for the operator's dynamic products first and picks the one priced at
/// `amount_to_send_x100` (or the only one); a 404 there means a fixed product.
pub async fn purchase(
    client: &CsqClient,
    cfg: &CsqConfig,
    p: &PurchaseParams,
    local_reference: i32,
) -> (Step, Vec<Exchange>) {
    let mut exchanges = Vec::new();
    let mut params = p.clone();
    if p.product_id.is_none() && p.body.dynamic_product_id.is_none() {
        let (products, exchange) = client.products(p.terminal_id, p.operator_id).await;
        exchanges.extend(exchange);
        match products {
            Ok(Products::NoneDynamic) => {}
            Ok(Products::List(items)) => match select_product(&items, p.body.amount_to_send_x100) {
                Some(id) => params.body.dynamic_product_id = Some(id),
                None => {
                    return (
                        Step::done(
                            Status::Failed,
                            Some(json!({"products": products_result(&items)})),
                            Some(error(
                                "no_matching_dynamic_product",
                                "the operator sells dynamic products and none is priced at amount_to_send_x100; name one in dynamic_product_id",
                                None,
                            )),
                        ),
                        exchanges,
                    );
                }
            },
            // Reading the list changes nothing at the provider: safe to try again.
            Err(e) => return (Step::Retry(format!("product list: {e}")), exchanges),
        }
    }
    let (answer, exchange) = client.purchase(&params, local_reference).await;
    exchanges.push(exchange);
    let reference = PurchaseRef {
        terminal_id: p.terminal_id,
        operator_id: p.operator_id,
        local_reference,
        product_id: p.product_id.as_deref(),
    };
    let step = match answer {
        Ok(a) => match purchase_decision(&a, reference) {
            Decision::Final {
                status: Status::Succeeded,
                result: Some(result),
                ..
            } => after_sale(cfg, client.is_raffle(p.operator_id), result),
            Decision::Final {
                status,
                result,
                error,
            } => Step::done(status, result, error),
            Decision::Unknown(reason) => Step::Unknown(reason),
        },
        Err(CallError::NotSent(reason)) => Step::Retry(reason),
        Err(CallError::Unknown(reason)) => Step::Unknown(reason),
        Err(CallError::Refused { status, body }) => refusal(status, &body),
    };
    (step, exchanges)
}

/// Lists an operator's dynamic products; a 404 is an answer too ("none").
pub async fn products(client: &CsqClient, p: &ProductsParams) -> (Step, Vec<Exchange>) {
    let (answer, exchange) = client.products(p.terminal_id, p.operator_id).await;
    let base = json!({"terminal_id": p.terminal_id, "operator_id": p.operator_id});
    let step = match answer {
        Ok(Products::NoneDynamic) => {
            let mut r = base;
            r["dynamic_products"] = json!(false);
            r["products"] = json!([]);
            r["message"] =
                json!("this operator has no dynamic products: purchase it as a fixed product");
            Step::done(Status::Succeeded, Some(r), None)
        }
        Ok(Products::List(items)) => {
            let mut r = base;
            r["dynamic_products"] = json!(true);
            r["products"] = products_result(&items);
            Step::done(Status::Succeeded, Some(r), None)
        }
        Err(CallError::Refused { status, body }) => refusal(status, &body),
        Err(e) => Step::Retry(e.to_string()),
    };
    (step, exchange.into_iter().collect())
}

/// Reads the terminal's balance.
pub async fn balance(client: &CsqClient, p: &BalanceParams) -> (Step, Vec<Exchange>) {
    let (answer, exchange) = client.balance(p.terminal_id).await;
    let step = match answer {
        Ok(v) => balance_step(&v, p.terminal_id),
        Err(CallError::Refused { status, body }) => refusal(status, &body),
        Err(e) => Step::Retry(e.to_string()),
    };
    (step, vec![exchange])
}

/// The product priced at `amount`, or the only product when no amount is given.
fn select_product(items: &Value, amount: Option<i32>) -> Option<String> {
    let list = items.as_array()?;
    let id = |p: &Value| {
        p.get("dynamicProductId")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    match amount {
        Some(a) => list
            .iter()
            .find(|p| p.get("amountX100").and_then(Value::as_i64) == Some(i64::from(a)))
            .and_then(id),
        None if list.len() == 1 => list.first().and_then(id),
        None => None,
    }
}

/// Products in the contract's snake_case.
fn products_result(items: &Value) -> Value {
    let list = items.as_array().cloned().unwrap_or_default();
    Value::Array(
        list.iter()
            .map(|p| {
                json!({
                    "dynamic_product_id": p.get("dynamicProductId"),
                    "name": p.get("name"),
                    "amount_x100": p.get("amountX100").and_then(Value::as_i64),
                    "currency": p.get("currency"),
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_by_price_or_the_only_product() {
        let items = json!([{"dynamicProductId": "a", "amountX100": 500}, {"dynamicProductId": "b", "amountX100": 1000}]);
        assert_eq!(select_product(&items, Some(1000)).as_deref(), Some("b"));
        assert_eq!(select_product(&items, Some(700)), None);
        assert_eq!(select_product(&items, None), None);
        let one = json!([{"dynamicProductId": "only", "amountX100": 500}]);
        assert_eq!(select_product(&one, None).as_deref(), Some("only"));
    }
}
