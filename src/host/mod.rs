//! The proxy-wasm shell: adapts the pure core to Envoy's contexts. Nothing here decides
//! anything the core could; it gathers input, calls the core and applies the result.

mod http;
mod metrics;
mod root;
mod shared_store;
mod succession;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Trace);
    // A panic kills the VM; say why before it does.
    std::panic::set_hook(Box::new(|info| {
        let _ = proxy_wasm::hostcalls::log(
            proxy_wasm::types::LogLevel::Critical,
            &format!("osmox-webhook-filter panicked: {info}"),
        );
    }));
    proxy_wasm::set_root_context(|context_id| Box::new(root::Root::new(context_id)));
}}
