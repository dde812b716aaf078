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
        let __prepared0 = w.prepare::<Repository<Account>, __Ctx>();
        let __prepared1 = w.prepare::<Dep<AuditLog>, __Ctx>();
        let (
            ::core::option::Option::Some(__prepared0),
            ::core::option::Option::Some(__prepared1),
        ) = (__prepared0, __prepared1) else { return };
        w.command::<
                Deposit,
                _,
            >(move |__message: Deposit, __ctx: __Ctx| {
            let __arg0 = <Repository<
                Account,
            > as ::lexigram::__private::HandlerParam<
                __Ctx,
            >>::produce(&__prepared0, &__ctx);
            let __arg1 = <Dep<
                AuditLog,
            > as ::lexigram::__private::HandlerParam<
                __Ctx,
            >>::produce(&__prepared1, &__ctx);
            async move { deposit(__message, __arg0, &__arg1).await }
        });
    }
    ::lexigram::__private::inventory::submit! {
        ::lexigram::__private::HandlerRegistration::command:: < Deposit >
        (::lexigram::__private::HandlerSite::new(::core::concat!(::core::module_path!(),
        "::", "deposit"), ::core::module_path!(), ::core::file!(), ::core::line!()),
        __lexigram_wire,)
    }
};
