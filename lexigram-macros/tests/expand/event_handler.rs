async fn audit(
    event: &MoneyDeposited,
    ctx: EventContext,
    log: Dep<AuditLog>,
) -> Result<(), AuditError> {
    log.write(ctx.stream_id(), event.amount).await
}
const _: () = {
    fn __lexigram_wire(w: &mut ::lexigram::__private::Wiring<'_>) {
        type __Ctx = ::lexigram::event::EventContext;
        let _ = ::lexigram::__private::HandlerRegistration::event::<MoneyDeposited>;
        let __param0 = ::lexigram::__private::prepare::<EventContext, __Ctx>(w);
        let __param1 = ::lexigram::__private::prepare::<Dep<AuditLog>, __Ctx>(w);
        let (
            ::core::option::Option::Some(__param0),
            ::core::option::Option::Some(__param1),
        ) = (__param0, __param1) else { return };
        w.event::<
                MoneyDeposited,
                _,
            >(
            move |__message: MoneyDeposited, __ctx: __Ctx| {
                let __arg0 = __param0.produce(&__ctx);
                let __arg1 = __param1.produce(&__ctx);
                async move {
                    let __result = audit(&__message, __arg0, __arg1).await;
                    ::lexigram::__private::handler_result::<
                        MoneyDeposited,
                        (),
                    >(::core::convert::identity(__result))
                }
            },
            10i32,
            ::core::option::Option::None,
        );
    }
    ::lexigram::__private::inventory::submit! {
        ::lexigram::__private::HandlerRegistration::event:: < MoneyDeposited >
        (::lexigram::__private::HandlerSite::new(::core::concat!(::core::module_path!(),
        "::", "audit"), ::core::module_path!(), ::core::file!(), ::core::line!()),
        __lexigram_wire,)
    }
};
