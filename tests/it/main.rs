//! Integration tests against the real RabbitMQ and PostgreSQL, in one binary so they link
//! once. Each test isolates itself with its own database and broker name prefix.

mod bad_input;
mod callbacks;
mod chaos;
mod cli;
mod console;
mod corpus;
mod csq_flows;
mod demo;
mod electrum;
mod electrum_sandbox;
mod govstack_sandbox;
mod harness;
mod operators;
mod polling;
mod purchase;
mod recovery;
mod restart;
mod topology;
mod webdriver;
