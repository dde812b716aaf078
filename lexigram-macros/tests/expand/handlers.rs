impl Notifier {
    async fn opened(&self, event: &AccountOpened) -> Result<(), MailError> {
        self.mailer.send(&event.owner).await
    }
}
const _: () = {
    fn __lexigram_wire(w: &mut ::lexigram::__private::Wiring<'_>) {
        type __Ctx = ::lexigram::event::EventContext;
        let _ = ::lexigram::__private::HandlerRegistration::event::<AccountOpened>;
        let ::core::option::Option::Some(__param0) = ::lexigram::__private::prepare::<
            ::lexigram::module::Dep<Notifier>,
            __Ctx,
        >(w) else { return };
        w.event::<
                AccountOpened,
                _,
            >(
            move |__message: AccountOpened, __ctx: __Ctx| {
                let __arg0 = __param0.produce(&__ctx);
                async move {
                    let __result = <Notifier>::opened(&__arg0, &__message).await;
                    ::lexigram::__private::handler_result::<
                        AccountOpened,
                        (),
                    >(::core::convert::identity(__result))
                }
            },
            0i32,
            ::core::option::Option::None,
        );
    }
    ::lexigram::__private::inventory::submit! {
        ::lexigram::__private::HandlerRegistration::event:: < AccountOpened >
        (::lexigram::__private::HandlerSite::new(::core::concat!(::core::module_path!(),
        "::", "Notifier::opened"), ::core::module_path!(), ::core::file!(),
        ::core::line!()), __lexigram_wire,)
    }
};
