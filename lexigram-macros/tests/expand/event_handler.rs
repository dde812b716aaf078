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
        let __prepared0 = w.prepare::<EventContext, __Ctx>();
        let __prepared1 = w.prepare::<Dep<AuditLog>, __Ctx>();
        let (
            ::core::option::Option::Some(__prepared0),
            ::core::option::Option::Some(__prepared1),
        ) = (__prepared0, __prepared1) else { return };
        w.event::<
                MoneyDeposited,
                _,
            >(
            move |__message: MoneyDeposited, __ctx: __Ctx| {
                let __arg0 = <EventContext as ::lexigram::__private::HandlerParam<
                    __Ctx,
                >>::produce(&__prepared0, &__ctx);
                let __arg1 = <Dep<
                    AuditLog,
                > as ::lexigram::__private::HandlerParam<
                    __Ctx,
                >>::produce(&__prepared1, &__ctx);
                async move { audit(&__message, __arg0, __arg1).await }
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
