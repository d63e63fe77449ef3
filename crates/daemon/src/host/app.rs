//! The hosted-app interface: how `switchboard up` starts, reloads and stops
//! every app beside the router, each owning its own part of the config file.
//!
//! An app implements [`App`]; the host keeps them in [`Apps`], in the order
//! added: configured (validated) together, started in order before any
//! client is let in, reloaded together only once every part of the new file
//! was accepted, stopped in reverse order. Adding an app is adding a crate
//! and one `Apps::with` line; no other app changes.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use super::{AppContext, ConfigError, Section};

/// What each app said about a reload, by app name.
pub type Reports = BTreeMap<&'static str, Bytes>;

/// Why an app could not start.
#[derive(Debug, thiserror::Error)]
#[error("{app}: {message}")]
pub struct AppError {
    pub app: &'static str,
    pub message: String,
}

impl AppError {
    pub fn new(app: &'static str, message: impl std::fmt::Display) -> Self {
        Self { app, message: message.to_string() }
    }
}

/// An app hosted by the daemon.
pub trait App: Sized + Send + 'static {
    /// Its name in logs and reload reports.
    const NAME: &'static str;
    /// The config file's top-level keys it owns (`services`, `logs`).
    const SECTIONS: &'static [&'static str];
    /// Its validated config.
    type Config: Send + 'static;

    /// Validates its section (empty when the file says nothing or there is
    /// no file). Called at start and before every reload: a refusal
    /// changes nothing.
    fn configure(section: &Section<'_>) -> Result<Self::Config, ConfigError>;

    /// Every problem of its section, for `switchboard check` and before a
    /// reload: what `configure` refuses, and what would fail only once
    /// applied (a command that is not there, a user that does not exist).
    /// By default `configure`'s first refusal.
    fn check(section: &Section<'_>) -> Vec<ConfigError> {
        Self::configure(section).err().into_iter().collect()
    }

    /// Starts; returns once it is ready for clients (the host lets them in
    /// only after every app started). `inherited` is what the same app
    /// handed off before the daemon re-executed itself, if it did.
    fn start(
        context: AppContext,
        config: Self::Config,
        inherited: Option<Bytes>,
    ) -> impl Future<Output = Result<Self, AppError>> + Send;

    /// Applies a new config; the report goes to whoever asked for the reload.
    fn reload(&mut self, config: Self::Config) -> impl Future<Output = Result<Bytes, String>> + Send;

    /// Stops, for good (the daemon shuts down).
    fn stop(self) -> impl Future<Output = ()> + Send;

    /// Stops so that a successor process can carry on, and returns the
    /// state it needs; by default a plain stop with nothing to hand over.
    fn hand_off(self) -> impl Future<Output = Option<Bytes>> + Send {
        async move {
            self.stop().await;
            None
        }
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An [`App`] with its type erased, so the host can keep a list.
trait Hosted: Send {
    fn name(&self) -> &'static str;
    fn sections(&self) -> &'static [&'static str];
    fn configure(&mut self, section: &Section<'_>) -> Result<(), ConfigError>;
    fn check(&self, section: &Section<'_>) -> Vec<ConfigError>;
    fn discard(&mut self);
    fn start(&mut self, context: AppContext, inherited: Option<Bytes>)
        -> BoxFuture<'_, Result<(), AppError>>;
    fn reload(&mut self) -> BoxFuture<'_, Result<Bytes, String>>;
    fn stop(&mut self) -> BoxFuture<'_, ()>;
    fn hand_off(&mut self) -> BoxFuture<'_, Option<Bytes>>;
}

/// One app: its config waiting to be applied, and the app once started.
struct Slot<A: App> {
    pending: Option<A::Config>,
    running: Option<A>,
}

impl<A: App> Hosted for Slot<A> {
    fn name(&self) -> &'static str {
        A::NAME
    }

    fn sections(&self) -> &'static [&'static str] {
        A::SECTIONS
    }

    fn configure(&mut self, section: &Section<'_>) -> Result<(), ConfigError> {
        self.pending = Some(A::configure(section)?);
        Ok(())
    }

    fn check(&self, section: &Section<'_>) -> Vec<ConfigError> {
        A::check(section)
    }

    fn discard(&mut self) {
        self.pending = None;
    }

    fn start(
        &mut self,
        context: AppContext,
        inherited: Option<Bytes>,
    ) -> BoxFuture<'_, Result<(), AppError>> {
        Box::pin(async move {
            let config =
                self.pending.take().ok_or_else(|| AppError::new(A::NAME, "started before configured"))?;
            self.running = Some(A::start(context, config, inherited).await?);
            Ok(())
        })
    }

    fn reload(&mut self) -> BoxFuture<'_, Result<Bytes, String>> {
        Box::pin(async move {
            match (self.running.as_mut(), self.pending.take()) {
                (Some(app), Some(config)) => app.reload(config).await,
                _ => Ok(Bytes::new()),
            }
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(app) = self.running.take() {
                app.stop().await;
            }
        })
    }

    fn hand_off(&mut self) -> BoxFuture<'_, Option<Bytes>> {
        Box::pin(async move {
            match self.running.take() {
                Some(app) => app.hand_off().await,
                None => None,
            }
        })
    }
}

/// The apps a daemon hosts, in the order they start.
#[derive(Default)]
pub struct Apps {
    slots: Vec<Box<dyn Hosted>>,
}

impl Apps {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an app, started after those added before it.
    pub fn with<A: App>(mut self) -> Self {
        self.slots.push(Box::new(Slot::<A> { pending: None, running: None }));
        self
    }

    /// The config keys of each app, in order.
    pub(crate) fn sections(&self) -> Vec<&'static [&'static str]> {
        self.slots.iter().map(|slot| slot.sections()).collect()
    }

    /// Validates each app's section (given in the order of [`Apps::sections`]);
    /// if one is refused, none keeps its new config.
    pub(crate) fn configure(&mut self, sections: &[Section<'_>]) -> Result<(), ConfigError> {
        for (slot, section) in self.slots.iter_mut().zip(sections) {
            if let Err(err) = slot.configure(section) {
                self.discard();
                return Err(err);
            }
        }
        Ok(())
    }

    /// Every problem of each app's section (in the order of [`Apps::sections`]).
    pub(crate) fn check(&self, sections: &[Section<'_>]) -> Vec<ConfigError> {
        self.slots.iter().zip(sections).flat_map(|(slot, section)| slot.check(section)).collect()
    }

    pub(crate) fn discard(&mut self) {
        for slot in &mut self.slots {
            slot.discard();
        }
    }

    /// Starts every app in order; `inherited` holds what apps handed off
    /// by name. On a failure the apps already started are stopped.
    pub(crate) async fn start(
        &mut self,
        context: &AppContext,
        mut inherited: BTreeMap<String, Bytes>,
    ) -> Result<(), AppError> {
        for index in 0..self.slots.len() {
            let slot = &mut self.slots[index];
            let state = inherited.remove(slot.name());
            if let Err(err) = slot.start(context.clone(), state).await {
                self.stop().await;
                return Err(err);
            }
            tracing::debug!(app = self.slots[index].name(), "app started");
        }
        Ok(())
    }

    /// Applies the configs [`Apps::configure`] accepted.
    pub(crate) async fn reload(&mut self) -> Result<Reports, String> {
        let mut reports = Reports::new();
        for slot in &mut self.slots {
            let name = slot.name();
            let report = slot.reload().await.map_err(|why| format!("{name}: {why}"))?;
            reports.insert(name, report);
        }
        Ok(reports)
    }

    /// Stops every running app, the last started first.
    pub(crate) async fn stop(&mut self) {
        for slot in self.slots.iter_mut().rev() {
            slot.stop().await;
        }
    }

    /// Stops every app for a successor process, the last started first,
    /// and gathers what each hands over.
    pub async fn hand_off(&mut self) -> BTreeMap<String, Bytes> {
        let mut states = BTreeMap::new();
        for slot in self.slots.iter_mut().rev() {
            if let Some(state) = slot.hand_off().await {
                states.insert(slot.name().to_owned(), state);
            }
        }
        states
    }
}
