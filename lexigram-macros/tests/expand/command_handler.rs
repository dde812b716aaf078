async fn deposit(
    cmd: Deposit,
    accounts: Repository<Account>,
    log: &Dep<AuditLog>,
) -> Result<(), BankError> {
    Ok(())
}
const _: () = {
    fn __lexigram_wire(w: &mut ::lexigram::__private::Wiring<'_>) {
        type __Ctx = ::lexigram::command::CommandContext;
        let _ = ::lexigram::__private::HandlerRegistration::command::<Deposit>;
        let __param0 = ::lexigram::__private::prepare::<Repository<Account>, __Ctx>(w);
        let __param1 = ::lexigram::__private::prepare::<Dep<AuditLog>, __Ctx>(w);
        let (
            ::core::option::Option::Some(__param0),
            ::core::option::Option::Some(__param1),
        ) = (__param0, __param1) else { return };
        w.command::<
                Deposit,
                _,
            >(move |__message: Deposit, __ctx: __Ctx| {
            let __arg0 = __param0.produce(&__ctx);
            let __arg1 = __param1.produce(&__ctx);
            async move {
                let __result = deposit(__message, __arg0, &__arg1).await;
                ::lexigram::__private::handler_result::<
                    Deposit,
                    <Deposit as ::lexigram::Command>::Output,
                >(::core::convert::identity(__result))
            }
        });
    }
    ::lexigram::__private::inventory::submit! {
        ::lexigram::__private::HandlerRegistration::command:: < Deposit >
        (::lexigram::__private::HandlerSite::new(::core::concat!(::core::module_path!(),
        "::", "deposit"), ::core::module_path!(), ::core::file!(), ::core::line!()),
        __lexigram_wire,)
    }
};
