async fn welcome(
    event: AccountOpened,
    ctx: ReactionContext,
    mailer: Dep<Mailer>,
) -> Result<(), MailError> {
    mailer.send(&event.owner, ctx.event_id()).await
}
const _: () = {
    fn __lexigram_wire(w: &mut ::lexigram::__private::Wiring<'_>) {
        type __Ctx = ::lexigram::subscription::ReactionContext;
        let _ = ::lexigram::__private::HandlerRegistration::reaction::<AccountOpened>;
        let __param0 = ::lexigram::__private::prepare::<ReactionContext, __Ctx>(w);
        let __param1 = ::lexigram::__private::prepare::<Dep<Mailer>, __Ctx>(w);
        let (
            ::core::option::Option::Some(__param0),
            ::core::option::Option::Some(__param1),
        ) = (__param0, __param1) else { return };
        w.reaction::<
                AccountOpened,
                _,
            >(
            move |__message: AccountOpened, __ctx: __Ctx| {
                let __arg0 = __param0.produce(&__ctx);
                let __arg1 = __param1.produce(&__ctx);
                async move {
                    let __result = welcome(__message, __arg0, __arg1).await;
                    ::lexigram::__private::handler_result::<
                        AccountOpened,
                        (),
                    >(::core::convert::identity(__result))
                }
            },
            ::lexigram::subscription::ReactionDecl::new("bank.welcome-mail")
                .partitions(4u32)
                .start_from(::lexigram::subscription::StartFrom::Now),
        );
    }
    ::lexigram::__private::inventory::submit! {
        ::lexigram::__private::HandlerRegistration::reaction:: < AccountOpened >
        (::lexigram::__private::HandlerSite::new(::core::concat!(::core::module_path!(),
        "::", "welcome"), ::core::module_path!(), ::core::file!(), ::core::line!()),
        __lexigram_wire,)
    }
};
