impl Notifier {
    async fn opened(&self, event: &AccountOpened) -> Result<(), MailError> {
        self.mailer.send(&event.owner).await
    }
}
const _: () = {
    fn __lexigram_wire(w: &mut ::lexigram::__private::Wiring<'_>) {
        type __Ctx = ::lexigram::event::EventContext;
        let __prepared0 = w.prepare::<::lexigram::module::Dep<Notifier>, __Ctx>();
        let (::core::option::Option::Some(__prepared0),) = (__prepared0,) else {
            return
        };
        w.event::<
                AccountOpened,
                _,
            >(
            move |__message: AccountOpened, __ctx: __Ctx| {
                let __arg0 = <::lexigram::module::Dep<
                    Notifier,
                > as ::lexigram::__private::HandlerParam<
                    __Ctx,
                >>::produce(&__prepared0, &__ctx);
                async move { <Notifier>::opened(&__arg0, &__message).await }
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
