async fn balance(q: GetBalance, view: Dep<BalanceView>) -> Result<u64, BankError> {
    view.get(q.account).await
}
const _: () = {
    fn __lexigram_wire(w: &mut ::lexigram::__private::Wiring<'_>) {
        type __Ctx = ::lexigram::query::QueryContext;
        let _ = ::lexigram::__private::HandlerRegistration::query::<GetBalance>;
        let ::core::option::Option::Some(__param0) = ::lexigram::__private::prepare::<
            Dep<BalanceView>,
            __Ctx,
        >(w) else { return };
        w.cached_query::<
                GetBalance,
                _,
            >(
            move |__message: GetBalance, __ctx: __Ctx| {
                let __arg0 = __param0.produce(&__ctx);
                async move {
                    let __result = balance(__message, __arg0).await;
                    ::lexigram::__private::handler_result::<
                        GetBalance,
                        <GetBalance as ::lexigram::Query>::Output,
                    >(::core::convert::identity(__result))
                }
            },
            ::lexigram::query::CachePolicy::new(
                ::core::time::Duration::from_millis(30000u64),
                500usize,
            ),
        );
    }
    ::lexigram::__private::inventory::submit! {
        ::lexigram::__private::HandlerRegistration::query:: < GetBalance >
        (::lexigram::__private::HandlerSite::new(::core::concat!(::core::module_path!(),
        "::", "balance"), ::core::module_path!(), ::core::file!(), ::core::line!()),
        __lexigram_wire,)
    }
};
