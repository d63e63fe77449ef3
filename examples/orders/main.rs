//! An event chain: the shop publishes `orders.created`; fulfilment hears it
//! and reserves stock with a typed call to `inventory.reserve`; inventory
//! publishes what happened on `inventory.reserved` / `inventory.rejected`;
//! a notifier logs every outcome.
//!
//! ```text
//! orders                 # demo: every role in one process, four orders
//! orders inventory       # serve inventory until Ctrl-C
//! orders fulfilment      # reserve stock for every order until Ctrl-C
//! orders notifier        # log outcomes until Ctrl-C
//! orders shop            # publish four orders
//! ```
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use switchboard::{contract, Bus, Item, Reject};

const USAGE: &str = "usage: orders [demo | inventory | fulfilment | notifier | shop]";

/// Published on `orders.created`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
    pub item: String,
    pub qty: u32,
}

/// Published on `inventory.reserved` or `inventory.rejected`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub order: u64,
    pub item: String,
    pub qty: u32,
    pub left: u32,
    pub reason: Option<String>,
}

#[contract(service = "inventory")]
pub trait Inventory {
    /// Takes `qty` of `item` for `order`, or rejects if there is not enough.
    async fn reserve(&self, order: u64, item: String, qty: u32) -> Result<u32, Reject>;
    /// How many of `item` are left.
    async fn stock(&self, item: String) -> Result<u32, Reject>;
}

struct Stock {
    bus: Bus,
    items: Mutex<HashMap<String, u32>>,
}

impl Inventory for Stock {
    async fn reserve(&self, order: u64, item: String, qty: u32) -> Result<u32, Reject> {
        let result = {
            let mut items = self.items.lock().map_err(|_| Reject::new("inventory state poisoned"))?;
            let left = items.get(&item).copied().unwrap_or(0);
            if left >= qty {
                items.insert(item.clone(), left - qty);
                Ok(left - qty)
            } else {
                Err(left)
            }
        };
        let (topic, outcome) = match result {
            Ok(left) => ("inventory.reserved", Outcome { order, item, qty, left, reason: None }),
            Err(left) => {
                let reason = format!("only {left} {item} left");
                ("inventory.rejected", Outcome { order, item, qty, left, reason: Some(reason) })
            }
        };
        let payload = switchboard::encode(&outcome).map_err(|e| Reject::new(e.to_string()))?;
        self.bus.publish(topic, payload).await.map_err(|e| Reject::new(e.to_string()))?;
        match outcome.reason {
            None => Ok(outcome.left),
            Some(reason) => Err(Reject::new(reason)),
        }
    }

    async fn stock(&self, item: String) -> Result<u32, Reject> {
        let items = self.items.lock().map_err(|_| Reject::new("inventory state poisoned"))?;
        Ok(items.get(&item).copied().unwrap_or(0))
    }
}

async fn inventory(bus: &Bus) -> anyhow::Result<switchboard::Service> {
    let items = HashMap::from([("apple".to_owned(), 10), ("pear".to_owned(), 3)]);
    let stock = Stock { bus: bus.clone(), items: Mutex::new(items) };
    Ok(InventoryServer::builder(bus, stock).start().await?)
}

/// For each order, reserve its stock through the typed client.
async fn fulfilment(bus: Bus, mut orders: switchboard::Subscription) -> anyhow::Result<()> {
    let inventory = InventoryClient::new(&bus);
    while let Some(item) = orders.next().await {
        let Item::Message(message) = item else {
            continue;
        };
        let order: Order = switchboard::decode(&message.payload)?;
        // A rejection is an expected outcome here; inventory announces it.
        match inventory.reserve(order.id, order.item, order.qty).await {
            Ok(_) | Err(switchboard::CallError::Rejected(_)) => {}
            Err(err) => eprintln!("order {}: reserving stock failed: {err}", order.id),
        }
    }
    Ok(())
}

/// Logs every outcome; stops after `count` if given (and then gives up if
/// one does not come within 10 s).
async fn notifier(mut outcomes: switchboard::Subscription, count: Option<usize>) -> anyhow::Result<()> {
    let mut seen = 0;
    while count.is_none_or(|n| seen < n) {
        let next = match count {
            None => outcomes.next().await,
            Some(_) => {
                match tokio::time::timeout(std::time::Duration::from_secs(10), outcomes.next()).await {
                    Ok(next) => next,
                    Err(_) => anyhow::bail!("no outcome within 10 s after {seen} (is fulfilment running?)"),
                }
            }
        };
        let Some(item) = next else { anyhow::bail!("the connection to the daemon closed") };
        let Item::Message(message) = item else {
            continue;
        };
        let o: Outcome = switchboard::decode(&message.payload)?;
        match o.reason {
            None => println!("order {}: reserved {} {} ({} left)", o.order, o.qty, o.item, o.left),
            Some(reason) => println!("order {}: rejected: {reason}", o.order),
        }
        seen += 1;
    }
    Ok(())
}

async fn shop(bus: &Bus) -> anyhow::Result<usize> {
    let orders = [("apple", 2), ("pear", 2), ("pear", 2), ("apple", 1)];
    for (id, (item, qty)) in orders.iter().enumerate() {
        let order = Order { id: id as u64 + 1, item: (*item).to_owned(), qty: *qty };
        bus.publish("orders.created", switchboard::encode(&order)?).await?;
    }
    // The shop may exit right after: make sure the orders left.
    bus.flush().await?;
    Ok(orders.len())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let role = switchboard_examples::role(USAGE, &["demo", "inventory", "fulfilment", "notifier", "shop"]);
    let bus = switchboard_examples::connect(&format!("orders-{role}")).await?;
    match role.as_str() {
        "inventory" => {
            let _service = inventory(&bus).await?;
            println!("inventory serving (Ctrl-C to stop)");
            switchboard_examples::ready();
            switchboard_examples::until_interrupted().await;
        }
        "fulfilment" => {
            let orders = bus.subscribe("orders.created").await?;
            switchboard_examples::ready();
            fulfilment(bus.clone(), orders).await?
        }
        "notifier" => {
            let outcomes = bus.subscribe("inventory.>").await?;
            switchboard_examples::ready();
            notifier(outcomes, None).await?
        }
        "shop" => println!("published {} orders", shop(&bus).await?),
        _ => {
            let _inventory = inventory(&bus).await?;
            let outcomes = bus.subscribe("inventory.>").await?;
            let fulfilment_bus = switchboard_examples::connect("orders-fulfilment").await?;
            let orders = fulfilment_bus.subscribe("orders.created").await?;
            let worker = tokio::spawn(fulfilment(fulfilment_bus, orders));
            let placed = shop(&switchboard_examples::connect("orders-shop").await?).await?;
            notifier(outcomes, Some(placed)).await?;
            worker.abort();
            let left = InventoryClient::new(&bus).stock("pear".to_owned()).await?;
            println!("pears left: {left}");
        }
    }
    Ok(())
}
